"""Frames in memory played as a source."""

import numpy as np
import pytest

from instantrestore.runtime.media import MemorySource


pytestmark = pytest.mark.timeout(120)


def frames(count=3, size=(64, 48)):
    return [np.full((size[1], size[0], 3), 10 * index, np.uint8) for index in range(count)]


def test_memory_source_hands_out_frames_of_its_own_in_a_loop():
    originals = frames(2)
    source = MemorySource(originals, fps=25, total=5)
    items = list(source)
    assert [item.index for item in items] == list(range(5)) and source.frame_count == 5
    assert [item.time for item in items] == [index / 25 for index in range(5)]
    np.testing.assert_array_equal(items[2].image, originals[0])
    items[0].image[:] = 255  # the runners paste into the frames they get: the source's own stay as they were
    assert originals[0].max() == 0
