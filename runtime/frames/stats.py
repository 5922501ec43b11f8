"""Per-stage timings, frame counters and latency of a run, and the --stats line and overlay."""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from typing import Optional

import numpy as np

from .work import PipelineError

STAGES = ("decode", "track", "align", "restore", "composite", "encode")

class PipelineStats:
    """Per-stage timings (seconds, last `window` samples kept) and frame counters. Thread-safe.

    Used by `instantrestore bench` (summary()) and by the --stats log and overlay (format_line(),
    draw()).
    """

    def __init__(self, window: int = 300):
        self._lock = threading.Lock()
        self._window = int(window)
        self.reset()

    def reset(self):
        with self._lock:
            self._samples = {stage: collections.deque(maxlen=self._window) for stage in STAGES}
            self._totals = {stage: 0.0 for stage in STAGES}
            self._counts = {stage: 0 for stage in STAGES}
            self.counters = collections.Counter()
            self._frame_times = collections.deque(maxlen=self._window)
            self._latencies = collections.deque(maxlen=self._window)

    def add(self, stage: str, seconds: float, frames: int = 1):
        """Record a stage duration; a batched call covering n frames counts as n frames of seconds/n."""
        if stage not in self._samples:
            raise PipelineError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        with self._lock:
            per_frame = seconds / max(1, frames)
            for _ in range(max(1, frames)):
                self._samples[stage].append(per_frame)
            self._totals[stage] += seconds
            self._counts[stage] += max(1, frames)

    @contextlib.contextmanager
    def time(self, stage: str, frames: int = 1):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start, frames)

    def count(self, name: str, n: int = 1):
        with self._lock:
            self.counters[name] += n

    def frame_done(self):
        """Mark one output frame, for the output rate estimate."""
        with self._lock:
            self.counters["frames"] += 1
            self._frame_times.append(time.perf_counter())

    def add_latency(self, seconds: float):
        """One shown frame's latency: from its capture to its leaving the sink."""
        with self._lock:
            self._latencies.append(float(seconds))

    def latency(self) -> Optional[dict]:
        """{"mean_ms", "p95_ms", "count"} over the last `window` shown frames, None before the first."""
        with self._lock:
            samples = np.array(self._latencies, np.float64) * 1000.0
        if samples.size == 0:
            return None
        return {"mean_ms": float(samples.mean()), "p95_ms": float(np.percentile(samples, 95)), "count": samples.size}

    def recent_latency_s(self, frames: int = 30) -> Optional[float]:
        """The mean latency of the last `frames` shown frames (about a second), None before the first."""
        with self._lock:
            recent = list(self._latencies)[-frames:]
        return sum(recent) / len(recent) if recent else None

    def fps(self) -> float:
        with self._lock:
            times = list(self._frame_times)
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def summary(self) -> dict:
        """{"stages": {stage: {count, mean_ms, p50_ms, p95_ms, total_s}}, "fps": ..., counters...}."""
        with self._lock:
            stages = {}
            for stage in STAGES:
                samples = np.array(self._samples[stage], np.float64) * 1000.0
                if self._counts[stage] == 0:
                    continue
                stages[stage] = {
                    "count": self._counts[stage],
                    "mean_ms": float(samples.mean()),
                    "p50_ms": float(np.percentile(samples, 50)),
                    "p95_ms": float(np.percentile(samples, 95)),
                    "total_s": self._totals[stage],
                }
            counters = dict(self.counters)
        latency = self.latency()
        return {"stages": stages, "fps": self.fps(), **({"latency": latency} if latency else {}), **counters}

    def format_line(self) -> str:
        summary = self.summary()
        parts = [f"{stage} {values['mean_ms']:.1f}" for stage, values in summary["stages"].items()]
        line = " | ".join(parts) + " ms"
        if summary["fps"]:
            line += f" | {summary['fps']:.1f} fps"
        if "latency" in summary:
            line += f" | latency {summary['latency']['mean_ms']:.0f} ms (p95 {summary['latency']['p95_ms']:.0f})"
        for name in ("no_face", "not_finite", "dropped", "repeated"):
            if summary.get(name):
                line += f" | {name} {summary[name]}"
        return line

    def draw(self, frame) -> np.ndarray:
        """A copy of frame with the stats line drawn in its top-left corner (for --stats overlays)."""
        import cv2

        canvas = np.array(frame, copy=True)
        text = self.format_line()
        scale = max(0.4, canvas.shape[1] / 1600.0)
        origin = (8, int(24 * scale + 8))
        cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
        return canvas
