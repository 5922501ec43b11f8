"""The One Euro filter."""

import numpy as np
import pytest

from instantrestore.runtime.tracking import OneEuroFilter


pytestmark = pytest.mark.timeout(120)


def test_one_euro_filter_constant_input_is_exact():
    filt = OneEuroFilter(min_cutoff=0.5, beta=1.0)
    value = np.array([[3.0, 4.0], [5.0, 6.0]])
    for index in range(20):
        out = filt(value, index / 30.0)
    np.testing.assert_array_equal(out, value)


def test_one_euro_filter_reduces_noise_and_follows_steps():
    rng = np.random.default_rng(1)
    filt = OneEuroFilter(min_cutoff=0.5, beta=0.0)
    noisy = 10.0 + rng.normal(0.0, 1.0, 300)
    smoothed = np.array([filt(np.array([value]), index / 30.0)[0] for index, value in enumerate(noisy)])
    assert smoothed[100:].std() < 0.3 * noisy[100:].std()
    # A fast filter (large beta) follows a step in a few frames.
    fast = OneEuroFilter(min_cutoff=0.5, beta=5.0)
    outputs = [fast(np.array([0.0 if index < 10 else 100.0]), index / 30.0)[0] for index in range(40)]
    assert outputs[-1] == pytest.approx(100.0, abs=1.0)
    slow = OneEuroFilter(min_cutoff=0.5, beta=0.0)
    slow_outputs = [slow(np.array([0.0 if index < 10 else 100.0]), index / 30.0)[0] for index in range(40)]
    assert outputs[15] > slow_outputs[15] + 10.0


def test_one_euro_filter_rejects_bad_parameters():
    with pytest.raises(ValueError):
        OneEuroFilter(min_cutoff=0.0)
