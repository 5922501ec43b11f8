"""File mode: every frame of a source, in order, restored into a sink, with the stages overlapped on three threads
so the restorer (the GPU) never waits for decoding or encoding."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

from ..media import Sink, Source
from .pipeline import FramePipeline, face_pipeline
from .stages import END, Handoff, Stages
from .stats import PipelineStats
from .work import Batch, PipelineError


@dataclass(frozen=True)
class RecordingOptions:
    """How restore_recording runs: `blend` the restored faces' strength (0..1), `batch_size` frames restored
    together, `progress` and `on_frame` as run_file calls them."""

    blend: float = 1.0
    batch_size: int = 1
    progress: Optional[Callable] = None
    on_frame: Optional[Callable] = None


def restore_recording(restorers: dict, profiles: dict, crop_size: int, source, sink,
                      options: RecordingOptions = RecordingOptions()) -> PipelineStats:
    """One recording through the face pipeline into an open sink (`video`, `batch`, the panel): the sink is
    finished, or aborted on any failure so no partial file is left. Returns the pipeline's stats."""
    try:
        with face_pipeline(profiles, restorers, crop_size, options.blend, recording=True) as pipeline:
            return run_file(pipeline, source, sink, progress=options.progress, batch_size=options.batch_size,
                            on_frame=options.on_frame)
    except BaseException:
        sink.abort()  # run_file aborts too; this covers a failure before it starts
        raise


def timed_frames(source: Source, stats: PipelineStats):
    iterator = iter(source)
    while True:
        start = time.perf_counter()
        try:
            item = next(iterator)
        except StopIteration:
            return
        stats.add("decode", time.perf_counter() - start)
        yield item


def prepare(pipeline: FramePipeline, source: Source, batch_size: int, to_restore: Handoff) -> None:
    """The first stage of run_file: decode, track (with look-ahead) and align every frame, and hand the batches on
    in the groups the look-ahead aligned together, each batch's crops in one buffer."""
    ahead = pipeline.look_ahead(batch_size)

    def send(aligned):
        for start in range(0, len(aligned), batch_size):
            to_restore.put(Batch(*map(list, zip(*aligned[start: start + batch_size]))))

    for item in timed_frames(source, pipeline.stats):
        send(ahead.push(item, item.image, item.time))
    send(ahead.flush())
    to_restore.put(END)


def run_file(pipeline: FramePipeline, source: Source, sink: Sink, progress=None, batch_size: int = 1,
             on_frame=None) -> PipelineStats:
    """Restore every frame of source, in order, into sink, then close the sink.

    Three stages overlap on three threads: decode + track + align, restore (this thread), composite +
    encode; so the restorer (the GPU) works on one batch while the CPU prepares the next and writes
    the last. batch_size > 1 sends several frames' faces to the restorer at once (throughput on a GPU).
    progress(done, total) is called after each written frame (total may be 0 if unknown), and
    on_frame(raw, restored) before it (a preview); an exception raised by either cancels the run.
    On any error the sink is aborted (no partial output file) and the error is raised.
    """
    if batch_size < 1:
        raise PipelineError(f"batch size must be at least 1, got {batch_size}")
    stats = pipeline.stats
    total = source.frame_count
    stages = Stages()
    to_restore, to_write = Handoff(stages.stop), Handoff(stages.stop)

    def restore():
        while (batch := to_restore.get()) is not END:
            batch.restored = pipeline.restore_located(batch.located)
            to_write.put(batch)
        to_write.put(END)

    def finish():
        done = 0
        while (batch := to_write.get()) is not END:
            # pasted into the decoded frames themselves, unless on_frame is to see them as they were
            outputs = pipeline.composite_batch(batch.images, batch.located, batch.restored, in_place=on_frame is None)
            for item, output in zip(batch.frames, outputs):
                with stats.time("encode"):
                    sink.write(output, item.time)
                stats.frame_done()
                done += 1
                if on_frame is not None:
                    on_frame(item.image, output)
                if progress is not None:
                    progress(done, total)

    try:
        stages.start(lambda: prepare(pipeline, source, batch_size, to_restore), "prepare")
        stages.start(finish, "finish")
        stages.run(restore)
        stages.join()
        stages.raise_first()
        sink.close()
    except BaseException:
        stages.stop.set()
        stages.join(timeout=30.0)  # the writer must be done before the sink is aborted
        sink.abort()
        raise
    return stats
