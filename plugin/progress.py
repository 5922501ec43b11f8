"""Progress output on stderr: a redrawn bar on a terminal, occasional plain lines otherwise (logs, CI); the
words and lines the commands report with."""

from __future__ import annotations

import os
import sys
import time


def say(message: str) -> None:
    print(f"[instantrestore] {message}", file=sys.stderr, flush=True)


def rate_text(fps) -> str:
    """A frame rate as people write it: 30, 25, 29.97, 23.98."""
    return f"{float(fps):.2f}".rstrip("0").rstrip(".")


def count_text(count: int, noun: str) -> str:
    """1 frame, 2 frames."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def quiet_when_the_reader_leaves(run):
    """`run(args)` for a command whose output is made for pipes: when the reader stops early
    (`instantrestore profiles | head -1`), it ends quietly with status 141, as Unix tools do on SIGPIPE."""

    def guarded(args) -> int:
        try:
            code = run(args)
            sys.stdout.flush()  # a closed pipe shows here, not in Python's own flush at exit
            return code
        except BrokenPipeError:
            # stdout's buffer still holds lines; Python would report failing to flush them at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141  # 128 + SIGPIPE (13), what a shell reports for a tool stopped that way

    return guarded


def clock(seconds: float) -> str:
    """A duration as the progress bar and the panel show it: mm:ss, or h:mm:ss."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


class ProgressBar:
    """Call with (done, total) after each unit of work; total may be 0 when unknown."""

    def __init__(self, label: str, unit: str = "frames", stream=None, width: int = 30, line_interval_s: float = 5.0):
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.line_interval_s = line_interval_s
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._last_fraction_logged = -1.0
        self._drawn = False

    def text(self, done: int, total: int) -> str:
        elapsed = time.monotonic() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        if total:
            fraction = min(1.0, done / total)
            filled = int(round(fraction * self.width))
            bar = "#" * filled + "-" * (self.width - filled)
            eta = (total - done) / rate if rate > 0 else 0.0
            return (f"{self.label} [{bar}] {done}/{total} {self.unit} {fraction * 100:3.0f}% "
                    f"{rate:.2f} {self.unit}/s elapsed {clock(elapsed)} left {clock(eta)}")
        return f"{self.label} {done} {self.unit} {rate:.2f} {self.unit}/s elapsed {clock(elapsed)}"

    def __call__(self, done: int, total: int = 0) -> None:
        now = time.monotonic()
        finished = bool(total) and done >= total
        if self.interactive:
            if finished or now - self._last_draw >= 0.1:
                self.stream.write("\r" + self.text(done, total) + "\x1b[K")
                self.stream.flush()
                self._last_draw = now
                self._drawn = True
            return
        # Not a terminal: a line per tenth of the work or per interval, so logs stay short.
        fraction = done / total if total else 0.0
        if finished or done == 1 or now - self._last_draw >= self.line_interval_s or fraction - self._last_fraction_logged >= 0.1:
            self.stream.write(self.text(done, total) + "\n")
            self.stream.flush()
            self._last_draw = now
            self._last_fraction_logged = fraction

    def close(self) -> None:
        """End the redrawn line so the next output starts on its own line."""
        if self.interactive and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


LEFT_ALONE = ("not enrolled", "too small", "identity unsure")  # the pipeline's reasons for not restoring a face


def faces_line(summary: dict) -> str:
    """The end-of-run account of faces (video, camera, batch), counted once per face and frame: how many were
    restored, and why the others were left as they were."""
    restored = int(summary.get("faces_restored", 0))
    reasons = [f"{int(summary[reason])} {reason}" for reason in LEFT_ALONE if summary.get(reason)]
    line = f"faces: {restored} restored"
    return line + (f"; left as they were: {', '.join(reasons)}" if reasons else "") + " (counted per frame)"
