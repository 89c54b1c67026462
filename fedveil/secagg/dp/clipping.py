"""L2 clipping of a client's update: the step that bounds one party's influence.

Why L2 (not per-coordinate): the Gaussian-type mechanisms' privacy depends on the L2
sensitivity of the sum, and clipping the whole update to norm <= C is what makes "one
client's contribution changes the sum by at most C" true. The clip flag is returned
because the clipped fraction is what one tunes C against (and may itself be released
only with DP; it is never sent to the server here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedveil.errors import ConfigError


@dataclass(frozen=True, eq=False)
class ClipResult:
    """The clipped update (a new float64 array), its norm before clipping, and whether it
    was scaled down."""

    vector: np.ndarray
    norm: float
    clipped: bool


def check_clip_norm(clip_norm: float) -> float:
    """The clip norm as a float, or a ConfigError naming the bad value."""
    if (
        isinstance(clip_norm, bool)
        or not isinstance(clip_norm, int | float | np.integer | np.floating)
        or not math.isfinite(clip_norm)
        or clip_norm <= 0
    ):
        raise ConfigError(
            f"clip_norm must be a finite number > 0, got {clip_norm!r}; pick about the "
            f"median L2 norm of honest updates"
        )
    return float(clip_norm)


def l2_clip(update: np.ndarray, clip_norm: float) -> ClipResult:
    """update * min(1, C / ||update||_2), with the result's norm guaranteed <= C in float64."""
    c = check_clip_norm(clip_norm)
    if not isinstance(update, np.ndarray) or update.ndim != 1 or update.dtype.kind != "f":
        got = (
            f"{update.dtype} of shape {update.shape}"
            if isinstance(update, np.ndarray)
            else (type(update).__name__)
        )
        raise ConfigError(f"update must be a 1-D float array (flatten it first), got {got}")
    x = update.astype(np.float64)  # a copy: the caller's update is never changed
    if not np.all(np.isfinite(x)):
        bad = x.shape[0] - int(np.count_nonzero(np.isfinite(x)))
        raise ConfigError(
            f"update has {bad} non-finite values (NaN or inf); it cannot be clipped: fix the "
            f"training step or drop this client's update"
        )
    norm = float(np.linalg.norm(x))
    if norm <= c:
        return ClipResult(vector=x, norm=norm, clipped=False)
    x *= c / norm
    # Rounding can leave the scaled norm a few ulps above C; shave until it is not.
    while float(np.linalg.norm(x)) > c:
        x *= 1.0 - 2.0**-50
    return ClipResult(vector=x, norm=norm, clipped=True)
