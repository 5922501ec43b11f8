"""What is a video file."""

import os
import re

import pytest

from instantrestore.runtime.media import FileSource, MediaError


pytestmark = pytest.mark.timeout(120)


def test_a_fifo_a_device_and_a_folder_are_named_not_opened(tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)  # opening it would wait for a writer: the test would hang
    for path, said in ((fifo, "is a FIFO (named pipe), not a video file"),
                       ("/dev/zero", "is a device, not a video file"),
                       (tmp_path, "is a folder, not a video file"), (tmp_path / "none.mp4", "video file not found")):
        with pytest.raises(MediaError, match=re.escape(said)):
            FileSource(path)
