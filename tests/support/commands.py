"""Helpers for the command tests: run a command, check its error line, list a folder."""

import os

import numpy as np

from instantrestore.plugin.cli import main


CLIP_FRAMES, CLIP_FPS, CLIP_SIZE = 12, 24, (320, 240)


def listing(folder) -> set:
    """Every file under folder (temp files included), to prove a failed command wrote nothing."""
    return {os.path.relpath(os.path.join(root, name), folder) for root, _, names in os.walk(folder) for name in names}


def run(capsys, *argv):
    """(exit code, stdout, stderr) of one command."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def face_regions(frame):
    """Boolean masks of a frame: well away from the clip's (drifting) face, and the middle of the face."""
    from instantrestore.runtime.align import face_crops

    x0, y0, x1, y1 = (int(round(v)) for v in face_crops(frame, 128)[0].box)
    size = x1 - x0
    outside = np.ones(frame.shape[:2], bool)
    drift = 2 * CLIP_FRAMES  # the face moves 2 px right and 1 px down per frame
    outside[max(0, y0 - size): y1 + size + drift, max(0, x0 - size): x1 + size + drift] = False
    inner = np.zeros(frame.shape[:2], bool)
    inner[y0 + size // 4: y1 - size // 4, x0 + size // 4: x1 - size // 4] = True
    return outside, inner


def assert_clear_error(code, err, *fragments):
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("instantrestore: error: "), err
    for fragment in fragments:
        assert fragment in last, last
    return last


def fake_sysfs(root, loopback_label="InstantRestore Camera", exclusive_caps="Y"):
    """/sys/class/video4linux with a webcam and a v4l2loopback device, and the module's parameters."""
    real = root / "devices" / "pci0000:00" / "video4linux" / "video0"
    virtual = root / "devices" / "virtual" / "video4linux" / "video10"
    for folder, name in ((real, "Integrated Camera"), (virtual, loopback_label)):
        folder.mkdir(parents=True)
        (folder / "name").write_text(name + "\n")
    classes = root / "class"
    classes.mkdir()
    (classes / "video0").symlink_to(real)
    (classes / "video10").symlink_to(virtual)
    module = root / "module" / "v4l2loopback"
    (module / "parameters").mkdir(parents=True)
    (module / "parameters" / "exclusive_caps").write_text(exclusive_caps + "\n")
    return classes, module
