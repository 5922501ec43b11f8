"""Live mode: capture + track + align, restore, and composite + output on three threads, so a slow restorer costs
frames, not latency or output rate."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Callable, Optional

import numpy as np

from ..media import Sink, Source
from .mailbox import Empty, LatestSlot
from .pipeline import FramePipeline
from .smoothing import LIVE, use_smoothing
from .stages import Stages
from .stats import PipelineStats
from .work import Batch


@dataclasses.dataclass
class LiveReport:
    """What happened during run_live. dropped: captured frames never processed plus processed frames
    replaced before they were shown; repeated: output ticks that re-sent the last frame."""

    captured: int = 0
    processed: int = 0
    sent: int = 0
    dropped: int = 0
    repeated: int = 0
    duration_s: float = 0.0
    max_latency_s: float = 0.0  # from capture to leaving the sink, of each newly shown frame
    mean_latency_s: float = 0.0
    p95_latency_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class LiveOptions:
    """How run_live runs: `max_frames` captured frames at most; `fps` the output rate (None: the source's);
    `halt`, set by another thread, stops the run; `on_frame(raw, shown, latency_s)` sees each newly shown frame."""

    max_frames: Optional[int] = None
    fps: Optional[float] = None
    halt: Optional[threading.Event] = None
    on_frame: Optional[Callable] = None


def run_live(pipeline: Optional[FramePipeline], source: Source, sink: Sink, options: LiveOptions = LiveOptions(),
             stats=None) -> LiveReport:
    """Camera-style run: capture + track + align, restore, and composite + output on separate threads.

    The capture thread tracks every frame and keeps only the newest for the restorer (older ones are
    dropped), so a frame waits at most one capture period before the model takes it. The output loop
    composites and sends each restored frame as soon as it is ready and re-sends the last one when
    nothing new comes within a frame period, so the call keeps the source's rate and never stalls. A
    source with live=False (a file) is played at its own frame rate. max_frames stops after that many
    captured frames; setting `halt` (another thread) stops the run as soon as it can. on_frame(raw,
    shown, latency_s) sees each newly shown frame (a preview). The sink is left open (the caller owns
    it). Returns a LiveReport; counts also go to stats.

    Without a pipeline (passthrough: the camera's own frames while the model loads, so call apps can already
    list and pick the virtual camera) each captured frame is sent as it is, from the capture thread.
    """
    stats = stats if stats is not None else pipeline.stats if pipeline is not None else PipelineStats()
    run = LiveRun(pipeline, source, sink, stats, period=1.0 / float(options.fps or source.fps or 30.0))
    return run.run(options.max_frames, options.halt, options.on_frame)


class LiveRun:
    """One run_live: its three stages (capture, restore, output) and what they count. The restore stage is left
    out without a pipeline (passthrough: the capture stage sends each frame itself)."""

    def __init__(self, pipeline: Optional[FramePipeline], source: Source, sink: Sink, stats: PipelineStats,
                 period: float):
        self.pipeline, self.source, self.sink, self.stats, self.period = pipeline, source, sink, stats, period
        self.report = LiveReport()
        self.to_worker, self.to_output = LatestSlot(), LatestSlot()  # the newest frame wins at each hand-off
        self.capture_done, self.worker_done = threading.Event(), threading.Event()
        self.stages = Stages()
        self.lock = threading.Lock()  # the report's counters, written by every stage
        self.latencies: list[float] = []
        if pipeline is not None:
            use_smoothing(pipeline.tracker, LIVE)

    def run(self, max_frames: Optional[int], halt: Optional[threading.Event], on_frame) -> LiveReport:
        self.stages.start(lambda: self.capture(max_frames), "capture")
        if self.pipeline is not None:
            self.stages.start(self.work, "restore")
        else:
            self.worker_done = self.capture_done  # nothing comes to the output loop: it waits for the capture to end
        started = time.monotonic()
        try:
            self.output(halt, on_frame)
        finally:
            self.stages.stop.set()
            self.stages.join(timeout=10.0)
        self._summarise(time.monotonic() - started)
        self.stages.raise_first()
        return self.report

    def _dropped(self) -> None:
        with self.lock:
            self.report.dropped += 1
        self.stats.count("dropped")

    def capture(self, max_frames: Optional[int]) -> None:
        """Read the source (a file at its own rate), track and align every frame, and hand the newest to the
        restorer; tracked here, on every frame, so the worker only restores and the smoothing sees all motion."""
        try:
            paced, start = not self.source.live, time.monotonic()
            for item in self.source:
                if self.stages.stop.is_set():
                    break
                if paced and (delay := start + item.time - time.monotonic()) > 0:
                    time.sleep(delay)
                captured_at = time.monotonic()
                if self.pipeline is None:
                    self.sink.write(item.image, item.time)
                    self.report.sent += 1
                elif self.to_worker.put(Batch([item], *self.pipeline.locate_batch([item.image], [item.time]),
                                              captured_at=captured_at)):
                    self._dropped()
                with self.lock:
                    self.report.captured += 1
                if max_frames is not None and self.report.captured >= max_frames:
                    break
        finally:
            self.capture_done.set()

    def work(self) -> None:
        """Restore the newest captured frame's faces, again and again, and hand the result to the output loop."""
        try:
            while not self.stages.stop.is_set():
                try:
                    batch = self.to_worker.get(timeout=0.02)
                except Empty:
                    if self.capture_done.is_set() and self.to_worker.empty():
                        break
                    continue
                batch.restored = self.pipeline.restore_located(batch.located)
                with self.lock:
                    self.report.processed += 1
                if self.to_output.put(batch):
                    self._dropped()
        finally:
            self.worker_done.set()

    def output(self, halt: Optional[threading.Event], on_frame) -> None:
        """On the caller's thread: send each restored frame as soon as it is ready; when none comes, the last one
        again, first after 1.25 periods (a little slack for a late result), then every period."""
        last_output, last_sent_at, last_was_fresh = None, 0.0, True
        while not self.stages.errors and not (halt is not None and halt.is_set()):
            if last_output is None:
                wait = 0.05
            else:
                wait = max(0.0, last_sent_at + self.period * (1.25 if last_was_fresh else 1.0) - time.monotonic())
            finished = self.worker_done.is_set()  # read before the mailbox: a last result posted meanwhile is kept
            try:
                batch = self.to_output.get(timeout=wait)
            except Empty:
                if finished:
                    break
                if last_output is None:
                    continue
                batch = None
            if batch is not None:  # compositing here lets the worker start on the next frame meanwhile
                # pasted into the captured frame itself, unless on_frame is to see it as it was
                last_output = self.pipeline.composite_batch(batch.images, batch.located, batch.restored,
                                                            in_place=on_frame is None)[0]
            self._send(last_output, batch, on_frame)
            last_sent_at, last_was_fresh = time.monotonic(), batch is not None

    def _send(self, image, batch: Optional[Batch], on_frame) -> None:
        """Send a frame: a new one (batch, its latency measured) or the last one again (batch None)."""
        if batch is None:
            self.report.repeated += 1
            self.stats.count("repeated")
        with self.stats.time("encode"):
            self.sink.write(image, self.report.sent * self.period)
        if batch is not None:  # the latency that matters: from the capture to the frame leaving the sink
            latency = time.monotonic() - batch.captured_at
            self.latencies.append(latency)
            self.stats.add_latency(latency)
            if on_frame is not None:
                on_frame(batch.frames[0].image, image, latency)
        self.report.sent += 1
        self.stats.frame_done()

    def _summarise(self, duration_s: float) -> None:
        self.report.duration_s = duration_s
        if self.latencies:
            self.report.max_latency_s = max(self.latencies)
            self.report.mean_latency_s = sum(self.latencies) / len(self.latencies)
            self.report.p95_latency_s = float(np.percentile(self.latencies, 95))
