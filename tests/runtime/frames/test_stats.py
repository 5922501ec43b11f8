"""The stats: per-stage timings, counters, the --stats line and overlay."""

import numpy as np
import pytest

from instantrestore.runtime.frames.stats import PipelineStats
from instantrestore.runtime.frames.work import PipelineError


@pytest.mark.timeout(120)
def test_stats_line_and_overlay():
    stats = PipelineStats()
    stats.add("restore", 0.030)
    stats.add("restore", 0.010, frames=2)
    stats.count("dropped", 3)
    summary = stats.summary()
    assert summary["stages"]["restore"]["count"] == 3
    assert summary["stages"]["restore"]["mean_ms"] == pytest.approx((30 + 5 + 5) / 3)
    assert "restore" in stats.format_line() and "dropped 3" in stats.format_line()
    frame = np.zeros((120, 320, 3), np.uint8)
    drawn = stats.draw(frame)
    assert drawn.shape == frame.shape and drawn.any() and not frame.any()
    with pytest.raises(PipelineError):
        stats.add("nonsense", 1.0)
