"""Progress lines: rates and counts as people write them."""

from fractions import Fraction

import pytest

from tests.support.commands import CLIP_SIZE, run
from tests.support.media_helpers import placed_face, write_clip


pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("one_torch_thread")]


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
