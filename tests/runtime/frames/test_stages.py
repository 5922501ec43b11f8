"""The stage-thread helper: the first error wins and stops the other stages."""

import threading
import time

import pytest

from instantrestore.runtime.media import MediaError


@pytest.mark.timeout(120)
def test_the_first_stage_error_stops_the_others_and_is_raised():
    from instantrestore.runtime.frames.stages import Stages

    stages, stopped = Stages(), threading.Event()

    def waits():
        stopped.set() if stages.stop.wait(timeout=10) else None

    def fails():
        time.sleep(0.05)
        raise MediaError("disk full")

    def fails_later():
        stages.stop.wait(timeout=10)
        raise RuntimeError("second")

    stages.start(waits, "waits")
    stages.start(fails_later, "later")
    stages.run(fails)
    stages.join(timeout=10)
    assert stopped.is_set() and [type(error) for error in stages.errors] == [MediaError, RuntimeError]
    with pytest.raises(MediaError, match="disk full"):
        stages.raise_first()
