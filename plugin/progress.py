"""Progress output on stderr: tqdm's redrawn bar on a terminal, occasional plain lines otherwise (logs, CI); the
words and lines the commands report with."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


def say(message: str) -> None:
    print(f"[instantrestore] {message}", file=sys.stderr, flush=True)


def rate_text(fps) -> str:
    """A frame rate as people write it: 30, 25, 29.97, 23.98."""
    return f"{float(fps):.2f}".rstrip("0").rstrip(".")


def count_text(count: int, noun: str) -> str:
    """1 frame, 2 frames."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def clock(seconds: float) -> str:
    """A duration as the panel shows it (as tqdm does): mm:ss, or h:mm:ss."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


# tqdm's own layout, with the unit after the count too ("12/240 frames"), as logs and the tests read it
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt}{unit} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class ProgressBar:
    """Call with (done, total) after each unit of work; total may be 0 when unknown. On a terminal, tqdm's bar
    redrawn in place; elsewhere (logs, CI) tqdm's same words as a plain line per tenth of the work or per
    `line_interval_s`, so logs stay short."""

    def __init__(self, label: str, unit: str = "frames", stream=None, line_interval_s: float = 5.0):
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.line_interval_s = line_interval_s
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self.bar = None  # tqdm's, made at the first call on a terminal
        self.last_line = 0.0
        self.last_fraction_logged = -1.0

    def text(self, done: int, total: int) -> str:
        """The line as tqdm words it: label, percent and bar (when the total is known), count, times, rate."""
        return tqdm.format_meter(done, total or None, time.monotonic() - self.started, ncols=100,
                                 prefix=self.label, unit=" " + self.unit, ascii=True,
                                 bar_format=BAR_FORMAT if total else None)

    def __call__(self, done: int, total: int = 0) -> None:
        if self.interactive:
            self.draw(done, total)
            return
        now = time.monotonic()
        finished = bool(total) and done >= total
        fraction = done / total if total else 0.0
        if (finished or done == 1 or now - self.last_line >= self.line_interval_s
                or fraction - self.last_fraction_logged >= 0.1):
            self.stream.write(self.text(done, total) + "\n")
            self.stream.flush()
            self.last_line = now
            self.last_fraction_logged = fraction

    def draw(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total or None, desc=self.label, unit=" " + self.unit, file=self.stream,
                            dynamic_ncols=True, mininterval=0.1, leave=True, bar_format=BAR_FORMAT if total else None)
        if (total or None) != self.bar.total:
            self.bar.total = total or None
        self.bar.set_description_str(self.label, refresh=False)
        self.bar.update(done - self.bar.n)  # redrawn at most every mininterval
        if total and done >= total:
            self.bar.refresh()

    def close(self) -> None:
        """End the redrawn line so the next output starts on its own line."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Progress:
    """How a command reports while it runs, whoever runs it: lines (`progress("...")`), how far a long job is
    (`progress.work(label)`: a callable (done, total) with close()), and each finished frame for a front end that
    shows pictures (`on_frame(raw, restored)`, None where nobody looks, so no frame is kept for it). This one is the
    terminal's: lines on stderr and tqdm's bar. The panel's jobs map all three onto the page (ui/jobs.py)."""

    on_frame = None

    def __init__(self, say_line=say):
        self.say_line = say_line  # where the lines go: stderr here; a list, a log, a page elsewhere

    def __call__(self, message: str) -> None:
        self.say_line(message)

    def work(self, label: str, unit: str = "frames") -> ProgressBar:
        return ProgressBar(label, unit)


TERMINAL = Progress()  # what the command line reports through


LEFT_ALONE = ("not enrolled", "too small", "identity unsure")  # the pipeline's reasons for not restoring a face


def faces_line(summary: dict) -> str:
    """The end-of-run account of faces (video, camera, batch), counted once per face and frame: how many were
    restored, and why the others were left as they were."""
    restored = int(summary.get("faces_restored", 0))
    reasons = [f"{int(summary[reason])} {reason}" for reason in LEFT_ALONE if summary.get(reason)]
    line = f"faces: {restored} restored"
    return line + (f"; left as they were: {', '.join(reasons)}" if reasons else "") + " (counted per frame)"
