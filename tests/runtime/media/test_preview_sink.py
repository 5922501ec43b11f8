"""The preview window."""

import cv2
import numpy as np
import pytest

from instantrestore.runtime import media
from instantrestore.runtime.media import PreviewClosed, PreviewSink


pytestmark = pytest.mark.timeout(120)


def test_a_closed_preview_says_so(monkeypatch):
    monkeypatch.setattr(media.preview_sink, "display_problem", lambda: None)
    shown = []
    monkeypatch.setattr(cv2, "imshow", lambda title, image: shown.append(image))
    monkeypatch.setattr(cv2, "waitKey", lambda delay: ord("q"))
    preview = PreviewSink(overlay=lambda image: 255 - image)
    with pytest.raises(PreviewClosed):
        preview.write(np.zeros((48, 64, 3), np.uint8))
    assert shown and shown[0].min() > 0  # the overlay drew on what the window showed
