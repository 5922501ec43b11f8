"""The per-frame path, for the live camera and for files: track -> align -> restore -> composite.

work       the work item (Batch) and a located face, passed between the stages
stats      per-stage timings, counters, latency, and the --stats line and overlay
smoothing  one smoothing policy per mode (live: One Euro in the tracker; file: the look-ahead fit)
pipeline   FramePipeline: the steps on one frame or batch; face_pipeline builds one from profiles
stages     the stage-thread helper both runners use (first error wins, bounded hand-offs)
mailbox    the one "latest wins" mailbox (live mode and the steady camera)
file_run   run_file and restore_recording: every frame, in order, stages overlapped
live_run   run_live: the newest frame, at the source's rate, a slow restorer costs frames not latency

Kept free of imports here, so a module can take one piece (the mailbox) without loading the rest.
"""
