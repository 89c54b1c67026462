"""Integer noise for DP in the quantised ring: discrete Gaussian, Skellam, and their parts.

Why integer noise: the masked sum lives in Z_{2^m}, so noise must be an integer; rounding
continuous Gaussian noise would change its privacy analysis, and floating-point samplers
leak through their rounding pattern (Mironov 2012). Why these two: a sum of discrete
Gaussians is close to one (Kairouz et al. 2021), a sum of Skellams *is* one (Agarwal et
al. 2021); both have RDP bounds in secagg.dp.events.

Discrete Gaussian: the rejection sampler of Canonne, Kamath and Steinke (2020, Alg. 3,
with their Alg. 2 discrete Laplace), vectorised over the batch. Every Bernoulli(exp(-g))
decision is made *exactly*: the 53 known bits of a uniform U are compared against
exp(-g) computed in float64 with a margin of 2^-40 (far above the float error, which is
below 2^-47 for every input the sampler makes); only when U falls inside the margin (a
chance of about 2^-39 per test) is the decision finished in Python with more bits of U
and a correctly rounded `decimal` exp of the exact rational g. So the output
distribution is exactly the discrete Gaussian for the given rational sigma^2 (a float
sigma^2 is an exact dyadic rational), not merely close to it.

Skellam: Poisson(mu/2) - Poisson(mu/2), Poisson by the PTRS transformed rejection of
Hormann (1993) for mu/2 >= 10 (the algorithm numpy uses) and by products of uniforms
below that. Its acceptance test runs in float64 with a cancellation-free log-pmf, so it
is accurate to about 1e-12 relative in the pmf but not bit-exact like the Gaussian one.

Randomness: every uniform comes from secagg.dp.randomness.CryptoRandom (AES-256-CTR keyed
from the OS), never from numpy's generators.
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Callable
from fractions import Fraction

import numpy as np
from scipy.special import gammaln

from fedveil.errors import ConfigError
from fedveil.secagg.dp.randomness import CryptoRandom

MARGIN = 2.0**-40
"""Float comparisons closer than this to exp(-g) are settled exactly (see module doc)."""

MAX_SIGMA = float(2**40)
"""Largest noise std (in levels) the samplers take: keeps |samples| far below 2^53, where
float64 still represents every integer and the margin analysis holds."""

_TWO53 = float(1 << 53)


# --- Bernoulli(exp(-gamma)), exact ---------------------------------------------------


def _exp_neg_bounds(gamma: Fraction, digits: int) -> tuple[Fraction, Fraction]:
    """Rational lo <= exp(-gamma) <= hi, at about `digits` significant digits."""
    if gamma == 0:
        return Fraction(1), Fraction(1)
    with decimal.localcontext() as ctx:
        ctx.prec = digits
        ctx.Emin = -999999
        g = decimal.Decimal(gamma.numerator) / decimal.Decimal(gamma.denominator)
        e = (-g).exp()  # correctly rounded (decimal spec); e <= 1
        # |g - gamma| <= 1 ulp(g) and |d exp(-x)/dx| <= 1, plus 1/2 ulp(e) <= 10^(1-digits).
        err = Fraction(10) ** (g.adjusted() - digits + 1) + Fraction(10) ** (1 - digits)
    centre = Fraction(e)
    return centre - 2 * err, centre + 2 * err


def _settle_exactly(known: int, gamma: Fraction, rng: CryptoRandom) -> bool:
    """Decide U < exp(-gamma), where U's first 53 bits are `known`, drawing more bits of U."""
    num, bits, digits = known, 53, 40
    while True:
        lo, hi = _exp_neg_bounds(gamma, digits)
        if Fraction(num + 1, 1 << bits) <= lo:
            return True
        if Fraction(num, 1 << bits) >= hi:
            return False
        num = (num << 64) | int(rng.uint64(1)[0])
        bits += 64
        digits *= 2


def bernoulli_exp_neg(
    gamma: np.ndarray,
    exact_gamma: Callable[[int], Fraction],
    rng: CryptoRandom,
    *,
    margin: float = MARGIN,
) -> np.ndarray:
    """Independent Bernoulli(exp(-gamma[i])) draws, decided exactly.

    gamma: float64 approximations (>= 0) of the exact rationals exact_gamma(i); the float
    path is only trusted outside `margin` (tests raise it to exercise the exact path).
    """
    known = rng.uniform53(gamma.shape[0])
    p = np.exp(-gamma)
    low = known.astype(np.float64) / _TWO53  # exact: known < 2^53
    high = (known + np.uint64(1)).astype(np.float64) / _TWO53
    accept = high <= p - margin  # U < high <= exp(-gamma)
    reject = low >= p + margin  # U >= low >= exp(-gamma)
    for i in np.flatnonzero(~(accept | reject)):
        accept[i] = _settle_exactly(int(known[i]), exact_gamma(int(i)), rng)
    return accept


# --- discrete Laplace and discrete Gaussian (Canonne, Kamath, Steinke 2020) ----------


def sample_discrete_laplace(
    t: int, count: int, rng: CryptoRandom, *, margin: float = MARGIN
) -> np.ndarray:
    """`count` draws with P(y) proportional to exp(-|y| / t), t a positive integer (CKS Alg. 2)."""
    if isinstance(t, bool) or not isinstance(t, int) or t < 1:
        raise ConfigError(f"discrete Laplace scale t must be an integer >= 1, got {t!r}")
    out = np.empty(count, dtype=np.int64)
    filled = 0
    while filled < count:
        need = count - filled
        u = rng.below(2 * need + 16, t)

        def ratio(i: int, u: np.ndarray = u) -> Fraction:
            return Fraction(int(u[i]), t)

        u = u[bernoulli_exp_neg(u / t, ratio, rng, margin=margin)]
        # V = number of Bernoulli(exp(-1)) successes before the first failure.
        v = np.zeros(u.shape[0], dtype=np.int64)
        active = np.arange(u.shape[0])
        while active.size:
            hit = bernoulli_exp_neg(
                np.ones(active.size), lambda _i: Fraction(1), rng, margin=margin
            )
            active = active[hit]
            v[active] += 1
        x = u + t * v
        negative = rng.bits(x.shape[0])
        keep = ~(negative & (x == 0))  # -0 is rejected so 0 is not counted twice
        y = np.where(negative, -x, x)[keep][:need]
        out[filled : filled + y.shape[0]] = y
        filled += y.shape[0]
    return out


def _exact_sigma2(sigma2: float | Fraction) -> Fraction:
    if isinstance(sigma2, bool) or not isinstance(sigma2, int | float | Fraction | np.floating):
        raise ConfigError(f"sigma^2 must be a number, got {type(sigma2).__name__}")
    if not math.isfinite(float(sigma2)) or sigma2 < 0 or float(sigma2) > MAX_SIGMA**2:
        raise ConfigError(
            f"sigma^2 must be finite and in [0, 2^80] (std <= 2^40 levels), got {sigma2!r}; "
            f"lower the quantisation scale"
        )
    return Fraction(sigma2)


def sample_discrete_gaussian(
    sigma2: float | Fraction, count: int, rng: CryptoRandom, *, margin: float = MARGIN
) -> np.ndarray:
    """`count` draws of N_Z(0, sigma2): P(y) proportional to exp(-y^2 / (2 sigma2)), y in Z.

    sigma2 is the variance *parameter*; the true variance is slightly below it (equal to
    float precision once sigma >= 1). CKS Alg. 3 with t = floor(sigma) + 1.
    """
    s2 = _exact_sigma2(sigma2)
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 0:
        raise ConfigError(f"count must be an integer >= 0, got {count!r}")
    out = np.zeros(int(count), dtype=np.int64)
    if s2 == 0 or count == 0:
        return out
    t = math.isqrt(math.floor(s2)) + 1  # floor(sqrt(x)) == isqrt(floor(x))
    s2f = float(s2)
    centre = s2 / t
    filled = 0
    while filled < count:
        need = int(count) - filled
        y = sample_discrete_laplace(t, 2 * need + 16, rng, margin=margin)
        gamma = (np.abs(y).astype(np.float64) - s2f / t) ** 2 / (2.0 * s2f)

        def exact(i: int, y: np.ndarray = y) -> Fraction:
            return (abs(int(y[i])) - centre) ** 2 / (2 * s2)

        kept = y[bernoulli_exp_neg(gamma, exact, rng, margin=margin)][:need]
        out[filled : filled + kept.shape[0]] = kept
        filled += kept.shape[0]
    return out


# --- Poisson and Skellam -------------------------------------------------------------


def _open_uniform(rng: CryptoRandom, count: int) -> np.ndarray:
    """Uniform on (0, 1): the 2^53-grid shifted by half a step, so log() never sees 0."""
    return (rng.uniform53(count).astype(np.float64) + 0.5) / _TWO53


def _log_poisson_pmf(k: np.ndarray, lam: float) -> np.ndarray:
    """log(e^-lam lam^k / k!) without the cancellation of k log(lam) - lgamma(k + 1).

    For k >= 10: lgamma(k+1) = k log k - k + log(2 pi k)/2 + stirlerr(k), so the log-pmf is
    (k - lam) - k log1p((k - lam)/lam) - log(2 pi k)/2 - stirlerr(k), every term small.
    """
    k = k.astype(np.float64)
    small = k < 10
    direct = -lam + k * math.log(lam) - gammaln(k + 1)
    kk = np.where(small, 10.0, k)
    stirlerr = 1 / (12 * kk) - 1 / (360 * kk**3) + 1 / (1260 * kk**5) - 1 / (1680 * kk**7)
    stable = (kk - lam) - kk * np.log1p((kk - lam) / lam)
    stable -= 0.5 * np.log(2 * math.pi * kk) + stirlerr
    return np.where(small, direct, stable)


def _poisson_small(lam: float, count: int, rng: CryptoRandom) -> np.ndarray:
    """Knuth's product-of-uniforms method; expected lam + 1 rounds, used for lam < 10."""
    limit = math.exp(-lam)
    out = np.zeros(count, dtype=np.int64)
    prod = np.ones(count)
    active = np.arange(count)
    while active.size:
        prod[active] *= _open_uniform(rng, active.size)
        going = prod[active] > limit
        active = active[going]
        out[active] += 1
    return out


def _poisson_ptrs(lam: float, count: int, rng: CryptoRandom) -> np.ndarray:
    """Hormann's PTRS transformed rejection, vectorised; lam >= 10."""
    slam = math.sqrt(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    log_invalpha = math.log(1.1239 + 1.1328 / (b - 3.4))
    vr = 0.9277 - 3.6224 / (b - 2)
    out = np.empty(count, dtype=np.int64)
    filled = 0
    while filled < count:
        need = count - filled
        m = need + need // 4 + 16
        u = _open_uniform(rng, m) - 0.5
        v = _open_uniform(rng, m)
        us = 0.5 - np.abs(u)
        k = np.floor((2 * a / us + b) * u + lam + 0.43)
        quick = (us >= 0.07) & (v <= vr)
        hopeless = (k < 0) | ((us < 0.013) & (v > us))
        slow = ~quick & ~hopeless
        accept = quick.copy()
        if slow.any():
            ks = k[slow]
            lhs = np.log(v[slow]) + log_invalpha - np.log(a / (us[slow] ** 2) + b)
            accept[slow] = lhs <= _log_poisson_pmf(ks, lam)
        kept = k[accept][:need].astype(np.int64)
        out[filled : filled + kept.shape[0]] = kept
        filled += kept.shape[0]
    return out


def sample_poisson(lam: float, count: int, rng: CryptoRandom) -> np.ndarray:
    """`count` Poisson(lam) draws; lam in [0, 2^80] (std up to 2^40)."""
    if isinstance(lam, bool) or not isinstance(lam, int | float | np.floating):
        raise ConfigError(f"Poisson mean must be a number, got {type(lam).__name__}")
    if not math.isfinite(lam) or lam < 0 or lam > MAX_SIGMA**2:
        raise ConfigError(f"Poisson mean must be finite and in [0, 2^80], got {lam!r}")
    if lam == 0 or count == 0:
        return np.zeros(count, dtype=np.int64)
    if lam < 10:
        return _poisson_small(float(lam), count, rng)
    return _poisson_ptrs(float(lam), count, rng)


def sample_skellam(variance: float, count: int, rng: CryptoRandom) -> np.ndarray:
    """`count` draws of Poisson(variance/2) - Poisson(variance/2): mean 0, the given variance."""
    if isinstance(variance, bool) or not isinstance(variance, int | float | np.floating):
        raise ConfigError(f"Skellam variance must be a number, got {type(variance).__name__}")
    lam = float(variance) / 2.0
    return sample_poisson(lam, count, rng) - sample_poisson(lam, count, rng)
