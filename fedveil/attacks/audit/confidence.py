"""Confidence intervals of a cell's metrics, corrected for the attacks it maximises over.

Why intervals: a point estimate from one seed cannot tell a protection that held from an
attack that was unlucky, so a claimed cell is judged on an interval (breach when its low
end crosses the threshold, pass when its high end stays under, inconclusive between).

Why Bonferroni: a cell reports the strongest of k attacks x metrics; taking the best of k
noisy scores is biased upward, so each of the k intervals is computed at level
1 - (1 - CONFIDENCE) / k, which makes all k hold together with probability at least
CONFIDENCE. The interval of the maximum is then [max of the lows, max of the highs].

Where the intervals come from: update attacks, a Student t interval over seeds (a
measurement that pins its own seeds gives identical values, and then a zero-width
interval: that is the measurement's variance, not a claim of certainty about other
data); membership attacks, the records' own bootstrap intervals (one released model:
several releases per protection would not fit the quick profile), widened to the
corrected level with the normal approximation; extraction, Clopper-Pearson on counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats

CONFIDENCE = 0.95
"""The family-wise level of every cell's interval."""

RECORD_CONFIDENCE = 0.95
"""The level of the bootstrap intervals the output records carry
(attacks.output.metrics.BootstrapConfig's default)."""

MULTIPLICITY = (
    "bonferroni over the k attacks x metrics each cell maximises over; a membership "
    "cell's empirical-epsilon lower bound is the maximum of its k attacks' one-run "
    "bounds, each at alpha / k (its certifiable bound at the same level)"
)


def corrected_level(comparisons: int, level: float = CONFIDENCE) -> float:
    """The per-comparison level that keeps the family-wise level over `comparisons`."""
    return 1.0 - (1.0 - level) / max(1, comparisons)


def t_interval(values: Sequence[float], level: float) -> tuple[float, float]:
    """Two-sided Student t interval of the mean; (-inf, inf) with fewer than two values
    (one seed says nothing about the spread)."""
    n = len(values)
    if n < 2:
        return (-math.inf, math.inf)
    mean = math.fsum(values) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(1.0 - (1.0 - level) / 2.0, n - 1)) * sd / math.sqrt(n)
    return (mean - half, mean + half)


def clopper_pearson(successes: int, trials: int, level: float) -> tuple[float, float]:
    """Exact two-sided binomial interval of a rate; (0, 1) without trials."""
    if trials <= 0:
        return (0.0, 1.0)
    tail = (1.0 - level) / 2.0
    low = 0.0 if successes <= 0 else float(stats.beta.ppf(tail, successes, trials - successes + 1))
    high = (
        1.0
        if successes >= trials
        else float(stats.beta.ppf(1.0 - tail, successes + 1, trials - successes))
    )
    return (low, high)


def trials_to_certify(threshold: float, level: float = CONFIDENCE) -> int:
    """The fewest trials whose Clopper-Pearson upper end at `level` (two-sided, as
    `clopper_pearson`) stays at or under `threshold` with zero successes.

    Why: a rate judged by its interval's high end can pass only if this many trials were
    run; with fewer, even a protection that let nothing through is inconclusive, and the
    audit says so (with this number) rather than leaving an unexplained straddle."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    tail = (1.0 - level) / 2.0
    # zero successes: high = 1 - tail^(1/n) <= threshold  <=>  n >= log(tail) / log(1 - t)
    n = max(1, math.ceil(math.log(tail) / math.log1p(-threshold) - 1e-9))
    while clopper_pearson(0, n, level)[1] > threshold:
        n += 1
    return n


def widen(
    value: float, low: float, high: float, level: float, *, bounds: tuple[float, float] = (0, 1)
) -> tuple[float, float]:
    """A RECORD_CONFIDENCE interval around `value` rescaled to `level` (normal
    approximation: each side's half-width times z(level) / z(RECORD_CONFIDENCE)),
    clipped to `bounds`."""
    scale = _z(level) / _z(RECORD_CONFIDENCE)
    lo = value - (value - low) * scale
    hi = value + (high - value) * scale
    return (max(bounds[0], min(lo, low)), min(bounds[1], max(hi, high)))


def _z(level: float) -> float:
    return float(stats.norm.ppf(1.0 - (1.0 - level) / 2.0))
