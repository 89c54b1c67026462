"""Weight modes: how much of a client's example count its weight reveals.

Why: the server learns the round's total weight (the sum of the survivors' weights) in
the clear, and the survivor list. Two rounds whose survivors differ by one client give
away that client's weight by subtraction, and an exact weight is its example count.

- EXACT: weight = example count (FedAvg's weighting; the default, unchanged behaviour).
- FIXED: weight = 1 for every client with data: the total is the number of
  contributors, which the survivor list shows anyway; the mean is unweighted.
- BUCKETED: the count rounded up to the next power of two (1, 2, 4, 8, ...), capped at
  the round's max_weight: the total moves only when a count crosses a power of two, and
  a client's weight reveals its count only to within a factor of 2, at the price of
  over-weighting that client by less than 2x.

A count of 0 (a client taking part without data) stays 0 in every mode: weighting its
zero update as 1 would pull the mean towards zero.
"""

from __future__ import annotations

import enum

import numpy as np

from fedveil.errors import ConfigError


class WeightMode(enum.Enum):
    """How `effective_weight` turns an example count into the weight that is sent."""

    EXACT = "exact"
    FIXED = "fixed"
    BUCKETED = "bucketed"

    @classmethod
    def parse(cls, value: WeightMode | str) -> WeightMode:
        """A WeightMode from itself or its name; ConfigError naming the choices."""
        if isinstance(value, WeightMode):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise ConfigError(f"weight mode must be one of {choices}, got {value!r}") from None


def bucket(count: int) -> int:
    """The smallest power of two >= count (0 stays 0)."""
    return 0 if count == 0 else 1 << (count - 1).bit_length()


def effective_weight(count: int, mode: WeightMode | str, max_weight: int | None = None) -> int:
    """The weight to send for `count` examples under `mode`.

    `max_weight` (the round's largest allowed weight; None or 0: unknown) caps a bucket
    that would exceed it; a count already above it is returned unchanged, so the round's
    own check refuses it with its usual error rather than having it silently cut.
    """
    chosen = WeightMode.parse(mode)
    if chosen is WeightMode.EXACT:
        return count  # unchanged, as before weight modes existed: the round checks it
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 0:
        raise ConfigError(f"weight must be a non-negative example count, got {count!r}")
    count = int(count)
    if count == 0:
        return 0
    if chosen is WeightMode.FIXED:
        return 1
    if max_weight and count > max_weight:
        return count
    rounded = bucket(count)
    return min(rounded, max_weight) if max_weight else rounded
