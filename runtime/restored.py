"""What a crop restorer hands back to the frame pipeline (the restorer's own type; runtime/frames reads it)."""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np


class RestoredCrops(NamedTuple):
    """What a restore callable returns when it can tell which crops it could not restore: `finite[i]` is False
    where the model's output was NaN or infinite (damaged weights, an fp16 overflow). Such a crop is never
    pasted: its frame passes through unchanged and is counted as "not_finite"."""

    crops: np.ndarray  # (B, S, S, 3) uint8
    finite: np.ndarray  # (B,) bool


RestoreFn = Callable[[np.ndarray], "np.ndarray | RestoredCrops"]
