"""Progress lines: rates and counts as people write them; the bar on a terminal and in a log."""

import io
from fractions import Fraction

import pytest

from instantrestore.plugin.progress import ProgressBar
from tests.support.commands import CLIP_SIZE, run
from tests.support.media_helpers import placed_face, write_clip


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("one_torch_thread")
def test_rates_and_counts_read_as_people_write_them(in_state, recording_backend, tmp_path, capsys):
    ntsc = write_clip(tmp_path / "ntsc.mp4", [placed_face(CLIP_SIZE, 0.45, (60.0, 10.0))[0]], fps=Fraction(30000, 1001))
    code, _, err = run(capsys, "video", ntsc, "-o", tmp_path / "out.mp4", "--profile", "me", "--backend", "torch")
    assert code == 0, err
    assert "1 frame at 29.97 fps" in err
    code, _, err = run(capsys, "camera", "--profile", "me", "--input", ntsc, "--vcam-backend", "recording",
                       "--backend", "torch")
    assert code == 0, err
    assert "playing ntsc.mp4 at 29.97 fps" in err and "320x240 at 29.97 fps" in err
    assert " 1 frames" not in err and "30 fps" not in err


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_a_plain_line_per_tenth_of_the_work():
    log = io.StringIO()
    bar = ProgressBar("restoring talk.mp4", stream=log)
    for done in range(1, 201):
        bar(done, 200)
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and 10 <= len(lines) <= 12, lines  # the first frame, then each tenth
    assert lines[0].startswith("restoring talk.mp4:") and "| 1/200 frames [" in lines[0]
    assert "100%" in lines[-1] and "| 200/200 frames [" in lines[-1] and "frames/s" in lines[-1]


def test_a_terminal_gets_one_line_redrawn_then_ended():
    terminal = Terminal()
    bar = ProgressBar("batch", stream=terminal)
    for done in range(1, 51):
        bar(done, 50)
    bar.label = "1/1 videos, now talk.mp4"
    bar(50, 50)
    bar.close()
    shown = terminal.getvalue()
    assert shown.endswith("\n") and shown.count("\n") == 1  # one line, redrawn with \r, ended when closed
    last = shown.rstrip("\n").split("\r")[-1]
    assert last.startswith("1/1 videos, now talk.mp4: 100%") and "| 50/50 frames [" in last


def test_an_unknown_total_counts_frames():
    log = io.StringIO()
    bar = ProgressBar("live", stream=log)
    bar(1)
    assert log.getvalue().startswith("live: 1 frames") and "frames/s" in log.getvalue()
