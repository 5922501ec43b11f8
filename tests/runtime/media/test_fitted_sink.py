"""The sinks that fit and fan out a camera run's frames."""

import numpy as np
import pytest

from instantrestore.runtime.media import fit_frame, FittedSink, TeeSink

from tests.support.media_helpers import RecordingSink


pytestmark = pytest.mark.timeout(120)


def test_fitted_sink_crops_to_the_output_shape_then_scales():
    wide = np.zeros((90, 160, 3), np.uint8)
    wide[:, :20] = 255  # the left strip goes when a 16:9 frame is fitted into 4:3
    assert fit_frame(wide, (120, 90)).shape == (90, 120, 3) and fit_frame(wide, (120, 90)).max() == 0
    assert fit_frame(wide, (160, 90)) is wide  # the right size already: untouched
    kept = RecordingSink()
    sink = FittedSink(TeeSink(kept, RecordingSink()), (80, 45))
    sink.write(wide, 0.5)
    assert kept.frames[0].shape == (45, 80, 3) and kept.timestamps == [0.5]
    sink.abort()
    assert kept.aborted and not kept.closed
