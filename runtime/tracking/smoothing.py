"""The One Euro filter that smooths a tracked face's keypoints, and the tracker's settings for it."""

from __future__ import annotations

import dataclasses
import math

import numpy as np


class OneEuroFilter:
    """One Euro filter (Casiez, Roussel, Vogel 2012) on arrays of any shape.

    A low-pass filter whose cutoff rises with speed: still keypoints are smoothed hard (no jitter),
    moving ones follow with little lag. min_cutoff (Hz) sets the smoothing at rest, beta how fast the
    cutoff grows with speed, d_cutoff (Hz) the smoothing of the speed estimate.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0, predict=None):
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError("OneEuroFilter needs min_cutoff > 0, d_cutoff > 0 and beta >= 0")
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        # (slow, fast) speeds: above `slow` the filter's own lag is made up for by its speed estimate, fully from
        # `fast` on; a still value is never moved by it (its speed estimate is noise). None: no prediction.
        self.predict = predict
        self.reset()

    def reset(self):
        self._value = None
        self._speed = None
        self._time = None

    @staticmethod
    def _alpha(cutoff, dt):
        tau = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, value, time_s: float) -> np.ndarray:
        value = np.asarray(value, np.float64)
        if self._value is None:
            self._value = value.copy()
            self._speed = np.zeros_like(value)
            self._raw, self._raw_speed = value.copy(), np.zeros_like(value)
            self._time = float(time_s)
            return self._value.copy()
        dt = float(time_s) - self._time
        if dt <= 0:
            # Same or earlier timestamp: nothing to integrate over; assume a nominal 30 fps step.
            dt = 1.0 / 30.0
        self._time = float(time_s)
        speed = (value - self._value) / dt
        alpha_d = self._alpha(self.d_cutoff, dt)
        self._speed = alpha_d * speed + (1.0 - alpha_d) * self._speed
        cutoff = self.min_cutoff + self.beta * np.abs(self._speed)
        alpha = self._alpha(cutoff, dt)
        self._value = alpha * value + (1.0 - alpha) * self._value
        if self.predict is None:
            return self._value.copy()
        # The speed of the input itself (the One Euro speed, taken against the smoothed value, overstates it by
        # the lag); at a steady speed v an exponential smoother trails by v * dt * (1 - alpha) / alpha.
        raw_speed = (value - self._raw) / dt
        self._raw = value
        self._raw_speed = alpha_d * raw_speed + (1.0 - alpha_d) * self._raw_speed
        slow, fast = self.predict
        weight = np.clip((np.abs(self._raw_speed) - slow) / (fast - slow), 0.0, 1.0)
        return self._value + weight * self._raw_speed * dt * (1.0 - alpha) / alpha


@dataclasses.dataclass(frozen=True)
class Smoothing:
    """The tracker's One Euro settings (see OneEuroFilter); speed is measured in face sizes per second, so the
    same values work at any resolution and face size. Tuned on BlazeFace with sensor noise: under a pixel of crop
    jitter at S=512 on a still face, while a face moving a face-width per second stays within ~10% of it."""

    min_cutoff: float = 0.2
    beta: float = 1.0
    d_cutoff: float = 1.0
    predict: object = (0.15, 0.5)

    def new_filter(self) -> OneEuroFilter:
        return OneEuroFilter(self.min_cutoff, self.beta, self.d_cutoff, self.predict)
