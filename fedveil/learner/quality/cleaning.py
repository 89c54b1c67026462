"""Which examples a party keeps, from its per-example scores (high score: suspect).

Three policies:
  top-fraction  drop the `fraction` highest-scoring examples: for a party that knows
                roughly how noisy its annotation is.
  mad           drop examples above median + c * 1.4826 * MAD (a robust z-score over
                c): for a party that does not; it drops nothing from clean data whose
                scores have no tail. The median and MAD stay inside the clean majority
                while fewer than half the examples are bad.
  threshold     drop examples scoring above `threshold`: for a score with a natural zero,
                as the prompt contrast has (above 0: another party's prompt explains the
                caption better than this party's own).
Whatever the method, at most `max_drop` of the examples go (the highest scores first), so a model
that scores everything badly cannot empty a party's data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from fedveil.errors import ConfigError

MAD_SCALE = 1.4826
"""MAD times this estimates the standard deviation of normally distributed scores."""


class CleaningMethod(StrEnum):
    """How the drop threshold is chosen (see the module docstring)."""

    TOP_FRACTION = "top-fraction"
    MAD = "mad"
    THRESHOLD = "threshold"


@dataclass(frozen=True)
class CleaningPolicy:
    """A keep/drop rule over one party's scores; validated on construction."""

    method: CleaningMethod = CleaningMethod.MAD
    fraction: float = 0.3
    """top-fraction: the share dropped, in [0, 1)."""
    mad_c: float = 3.0
    """mad: how many robust standard deviations above the median an outlier starts, > 0."""
    threshold: float = 0.0
    """threshold: examples scoring above it are dropped (finite)."""
    max_drop: float = 0.5
    """Never drop more than this share of the examples, in (0, 1)."""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "method", CleaningMethod(self.method))
        except ValueError:
            methods = [m.value for m in CleaningMethod]
            raise ConfigError(
                f"cleaning method must be one of {methods}, got {self.method!r}"
            ) from None
        if not (isinstance(self.fraction, int | float) and 0.0 <= self.fraction < 1.0):
            raise ConfigError(f"cleaning fraction must be in [0, 1), got {self.fraction!r}")
        if not (isinstance(self.mad_c, int | float) and math.isfinite(self.mad_c)) or not (
            self.mad_c > 0
        ):
            raise ConfigError(f"cleaning mad_c must be positive and finite, got {self.mad_c!r}")
        if not (isinstance(self.threshold, int | float) and math.isfinite(self.threshold)):
            raise ConfigError(f"cleaning threshold must be finite, got {self.threshold!r}")
        if not (isinstance(self.max_drop, int | float) and 0.0 < self.max_drop < 1.0):
            raise ConfigError(f"cleaning max_drop must be in (0, 1), got {self.max_drop!r}")
        if self.method is CleaningMethod.TOP_FRACTION and self.fraction > self.max_drop:
            raise ConfigError(f"cleaning fraction {self.fraction} exceeds max_drop {self.max_drop}")

    def keep_mask(self, scores: np.ndarray) -> np.ndarray:
        """True for every example kept; at least one is always kept."""
        values = np.asarray(scores, dtype=np.float64)
        if values.ndim != 1 or len(values) == 0:
            raise ConfigError(f"scores must be a non-empty vector, got shape {values.shape}")
        if not np.all(np.isfinite(values)):
            raise ConfigError("scores must be finite")
        order = np.argsort(-values, kind="stable")  # highest first
        if self.method is CleaningMethod.TOP_FRACTION:
            drop = int(math.floor(self.fraction * len(values)))
        elif self.method is CleaningMethod.THRESHOLD:
            drop = int((values > self.threshold).sum())
        else:
            median = float(np.median(values))
            mad = float(np.median(np.abs(values - median)))
            drop = int((values > median + self.mad_c * MAD_SCALE * mad).sum())
        drop = min(drop, int(math.floor(self.max_drop * len(values))), len(values) - 1)
        keep = np.ones(len(values), dtype=bool)
        keep[order[:drop]] = False
        return keep
