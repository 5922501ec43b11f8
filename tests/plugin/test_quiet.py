"""Native libraries' log lines kept off the terminal."""

import sys

import pytest


pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("one_torch_thread")]


def test_native_log_lines_are_kept_off_the_terminal(tmp_path):
    """MediaPipe/LiteRT and OpenCV log straight to fd 2; the CLI drops those lines and keeps the rest."""
    import subprocess

    script = (
        "import os, sys\n"
        "from instantrestore.plugin.quiet import filtered_native_stderr\n"
        "with filtered_native_stderr():\n"
        "    print('[instantrestore] progress', file=sys.stderr)\n"
        "    os.write(2, b'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n')\n"
        "    os.write(2, b'W0000 00:00:1795690829.106003    5846 inference_runner_litert.cc:1433] Input tensor\\n')\n"
        "    os.write(2, b'[ WARN:0@1.2] global cap_v4l.cpp:999 open VIDEOIO(V4L2:/dev/video9)\\n')\n"
        "    os.write(2, b'WARNING: [model_load.cc:402] Sparsity tensors may not yet be fully supported.\\n')\n"
        "    os.write(2, b'WARNING: the disk is full\\n')\n"
        "    os.write(2, b'a real problem from a native library\\n')\n"
        "print('after', file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # Python's own lines skip the filter's pipe (written before the native ones here, so they cannot interleave)
    assert done.stderr.splitlines() == ["[instantrestore] progress", "WARNING: the disk is full",
                                        "a real problem from a native library", "after"]


def test_the_face_detectors_own_log_lines_are_kept_off_the_terminal():
    """The real detectors on a run of frames (the full-range model is sparse: LiteRT warns about it on each
    frame): nothing reaches the terminal."""
    import subprocess

    script = (
        "import numpy as np\n"
        "from instantrestore.plugin.quiet import filtered_native_stderr\n"
        "from instantrestore.runtime.tracking import NearAndFarDetector\n"
        "from tests.support.media_helpers import astronaut\n"
        "with filtered_native_stderr():\n"
        "    with NearAndFarDetector(mode='video') as detector:\n"
        "        for index in range(6):\n"
        "            detector.detect(np.ascontiguousarray(astronaut()[::2, ::2]), index / 25)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
