"""The panel's long jobs, each on a thread of its own, and whose they are: every browser session has its own
live camera and its own recording, which no other session sees or stops."""

from __future__ import annotations

import collections
import shutil
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Optional

from instantrestore.runtime.errors import InstantRestoreError

from ..commands import camera, video
from ..messages import error_line
from ..progress import Progress, clock


# ------------------------------------------------------------------------------------------------ jobs on threads

SETTLE_S = 5.0  # how long the page keeps polling a job after it ended
PREVIEW_EVERY = 10  # a recording's before/after is refreshed every this many frames: often enough to watch


class Job(Progress):
    """One command run on a thread of its own, and the progress it reports through, as the page shows it: its
    lines (the last 50), how far its work is (done of total frames, counted from the first: the model load is not
    part of the rate), a cancel honoured at the next frame, the latest (raw, restored) frames for the preview, its
    one-line error, and whether it is still running. `run(progress)` is the command's run, its options given."""

    def __init__(self, run, shown_names: Optional[dict] = None):
        self.lines: collections.deque = collections.deque(maxlen=50)
        self.error: Optional[str] = None
        self.shown_names = shown_names or {}  # server path -> the name the user knows it by (an upload's own)
        self.result = None  # the Outcome's value
        self.latest: Optional[tuple] = None  # (raw, restored) frames for the preview
        self.cancel = threading.Event()
        self.done, self.total, self.started = 0, 0, time.monotonic()
        self.ended: Optional[float] = None  # time.monotonic() when it finished
        self._thread = threading.Thread(target=self._run, args=(run,), name="instantrestore-panel-job", daemon=True)
        self._thread.start()

    def _run(self, run):
        try:
            self.result = run(self).value
        except Cancelled:
            self.error = "cancelled; nothing was written"
        except Exception as error:  # noqa: BLE001 - shown in the page as the CLI's one line; the server goes on
            self.error = with_names(error_line(error), self.shown_names)
            if not isinstance(error, InstantRestoreError):  # a bug: where it happened goes to the terminal, to report
                traceback.print_exc()
        finally:
            self.ended = time.monotonic()

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    def work(self, label: str, unit: str = "frames") -> "JobCount":
        return JobCount(self)

    def count(self, done: int, total: int = 0) -> None:
        if self.cancel.is_set():
            raise Cancelled()  # raised inside the command's run: its half-written output is removed
        if self.done == 0:
            self.started = time.monotonic()
        self.done, self.total = done, total

    def on_frame(self, raw, restored) -> None:
        if self.done % PREVIEW_EVERY == 0:
            self.latest = (raw, restored)  # one reference swap: the work never waits for the page

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: Optional[float] = None) -> None:
        self._thread.join(timeout)

    @property
    def settled(self) -> bool:
        """Finished a while ago: the page's timer may stop polling it. Not at once: a poll answered just after a
        Stop could arrive after the next Start's answer and switch the new job's timer off (the page would freeze
        on the old job's last line)."""
        return self.ended is not None and time.monotonic() - self.ended > SETTLE_S


class JobCount:
    """What a job's progress.work() hands the command: called with (done, total) after each frame."""

    def __init__(self, job: Job):
        self.job = job

    def __call__(self, done: int, total: int = 0) -> None:
        self.job.count(done, total)

    def close(self) -> None:
        pass


class Cancelled(Exception):
    """The user cancelled a recording's restore (raised from its progress callback)."""


class LiveJob(Job):
    """`camera` run for the page: stopped, its strength and profiles changed and its frames shown through a
    LiveControl."""

    def __init__(self, options: camera.Options):
        self.control = camera.LiveControl(on_frame=self._frame)
        super().__init__(lambda progress: camera.run(options, progress, self.control))

    def _frame(self, raw, shown, latency_s):
        self.latest = (raw, shown)  # every frame: the output loop never waits for the page

    def stop(self) -> None:
        self.control.stop.set()
        self.join(timeout=15.0)

    def counters(self) -> str:
        pipeline = self.control.pipeline
        if pipeline is None:
            return "loading the model..."
        summary = pipeline.stats.summary()
        restore = summary["stages"].get("restore", {}).get("mean_ms", 0.0)
        # capture to the frame leaving the virtual camera, as the stats line and the delayed microphone take it
        latency = summary.get("latency", {"mean_ms": 0.0, "p95_ms": 0.0})
        return (f"{summary['fps']:.1f} frames/s | latency {latency['mean_ms']:.0f} ms "
                f"(p95 {latency['p95_ms']:.0f}) | restore {restore:.0f} ms | "
                f"{int(summary.get('frames', 0))} frames sent | {int(summary.get('dropped', 0))} dropped")


class RecordingJob(Job):
    """`video` run for the page: its progress, a before/after now and then, cancel."""

    def __init__(self, options: video.Options, shown_names: Optional[dict] = None):
        self.output = options.output
        super().__init__(lambda progress: video.run(options, progress), shown_names=shown_names)

    def progress_text(self) -> str:
        if not self.done:
            return "loading the model..."
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if not self.total:
            return f"{self.done} frames done, {rate:.1f} frames/s"
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        return (f"{self.done}/{self.total} frames, {100 * self.done / self.total:.0f}%, "
                f"about {clock(left)} left")


def with_names(message: str, shown_names: dict) -> str:
    """The message with each server path replaced by the name the user gave it (an upload's temp path by the
    file they picked)."""
    for path, name in shown_names.items():
        message = message.replace(repr(str(path)), repr(name)).replace(str(path), name)
    return message


# ------------------------------------------------------------------------------------------------ sessions

MAX_SESSIONS = 64


class Session:
    """One browser session's jobs and webcam photos."""

    def __init__(self, temp_dir: Path):
        self.live: Optional[LiveJob] = None
        self.recording: Optional[RecordingJob] = None
        self._temp_dir = temp_dir
        self._shots_dir: Optional[Path] = None

    @property
    def shots_dir(self) -> Path:
        """A folder of this session's own for its webcam photos, made when the first one is taken."""
        if self._shots_dir is None:
            self._shots_dir = Path(tempfile.mkdtemp(prefix="shots-", dir=self._temp_dir))
        return self._shots_dir

    @property
    def busy(self) -> bool:
        return any(job is not None and job.running for job in (self.live, self.recording))

    def stop_live(self) -> None:
        if self.live is not None and self.live.running:
            self.live.stop()

    def cancel_recording(self) -> None:
        if self.recording is not None and self.recording.running:
            self.recording.cancel.set()
            self.recording.join(timeout=30.0)

    def forget_shots(self) -> None:
        if self._shots_dir is not None:
            shutil.rmtree(self._shots_dir, ignore_errors=True)


class Panel:
    """The page's state on the server: the folders it may open paths under, its private temp folder, and one
    Session per browser session (by Gradio's session hash), so no session sees or stops another's jobs."""

    def __init__(self, temp_dir: Path, allowed_dirs=()):
        self.temp_dir = Path(temp_dir)
        self.allowed_dirs = list(allowed_dirs)
        self.sessions: dict = {}
        self.leftover: list = []  # recordings of sessions that closed their tab: they finish, stopped on close()
        self._lock = threading.Lock()

    def session(self, request) -> Session:
        """The calling browser session's own Session, kept from now on (it starts a job or takes a photo)."""
        key = getattr(request, "session_hash", None) or ""
        with self._lock:
            if key not in self.sessions:
                self._forget_idle()
                self.sessions[key] = Session(self.temp_dir)
            return self.sessions[key]

    def find(self, request) -> Session:
        """The calling session's Session to look at (progress, cancel, stop): an empty one, not kept, when it has
        none yet, so polling never adds sessions."""
        with self._lock:
            return self.sessions.get(getattr(request, "session_hash", None) or "") or Session(self.temp_dir)

    def _forget_idle(self) -> None:
        """Past MAX_SESSIONS, the sessions with nothing running are dropped (tabs whose close went unnoticed)."""
        if len(self.sessions) < MAX_SESSIONS:
            return
        for key, session in list(self.sessions.items()):
            if not session.busy:
                session.forget_shots()
                del self.sessions[key]

    def end_session(self, request) -> None:
        """The tab closed: its camera is released; a recording being restored finishes into the outputs folder."""
        with self._lock:
            session = self.sessions.pop(getattr(request, "session_hash", None) or "", None)
        if session is None:
            return
        session.stop_live()
        session.forget_shots()
        with self._lock:
            self.leftover = [other for other in self.leftover + [session] if other.busy]

    def close(self) -> None:
        with self._lock:
            sessions = list(self.sessions.values()) + self.leftover
            self.sessions, self.leftover = {}, []
        for session in sessions:
            session.stop_live()
            session.cancel_recording()
