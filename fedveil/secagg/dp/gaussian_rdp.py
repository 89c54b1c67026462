"""Renyi DP of the Poisson-subsampled Gaussian mechanism, in numpy/scipy.

Why here and not from a library: secagg is the pure core (no torch), and the curve is a
closed-form series, so computing it ourselves costs little and keeps DP-SGD's accounting
free of the deep-learning stack (issue 16). The mathematics is Mironov, Talwar, Zhang,
"Renyi Differential Privacy of the Sampled Gaussian Mechanism" (2019), Sec. 3:

One step adds N(0, sigma^2) to a sum (L2 sensitivity 1) over a Poisson sample with rate q.
Its RDP at order a > 1 is eps(a) = log(A_a) / (a - 1), where

    A_a = E_{z ~ mu_0} [ ((1 - q) + q mu_1(z) / mu_0(z))^a ],   mu_0 = N(0, sigma^2),
                                                                 mu_1 = N(1, sigma^2).

- Integer a: expanding the binomial and using E_{mu_0}[(mu_1/mu_0)^k] = exp((k^2 - k) /
  (2 sigma^2)) gives the finite sum
      A_a = sum_{k=0}^{a} C(a, k) (1 - q)^(a - k) q^k exp((k^2 - k) / (2 sigma^2)).
  Since the same sum without the exponential is 1 (binomial theorem), we compute
      A_a - 1 = sum_{k=2}^{a} C(a, k) (1 - q)^(a - k) q^k expm1((k^2 - k) / (2 sigma^2)),
  all terms >= 0, in log space: for small q or large sigma A_a is 1 + tiny, and log(A_a)
  must be accurate relative to that tiny value, not to 1.
- Fractional a: the binomial series no longer terminates and does not converge absolutely
  under the expectation, so the integral is split at z0 = sigma^2 log(1/q - 1) + 1/2, where
  q mu_1 = (1 - q) mu_0, and on each side the smaller term is expanded:
      A_a = sum_{i>=0} C(a, i) q^i (1-q)^(a-i) exp((i^2 - i)/(2 sigma^2)) Phi((z0 - i)/sigma)
          + sum_{i>=0} C(a, i) q^(a-i) (1-q)^i exp(((a-i)^2 - (a-i))/(2 sigma^2))
                                                     Phi(((a - i) - z0)/sigma)
  with C(a, i) = Gamma(a + 1) / (Gamma(i + 1) Gamma(a - i + 1)), whose sign alternates once
  i > a. Past the peak the terms alternate and shrink, so the error of stopping is below the
  first term left out; we stop at the first i where both terms are below exp(-30), the
  truncation of the paper's reference computation (Opacus and TF Privacy use it too, so the
  epsilons reported before issue 16 do not move).
- q = 1 is the plain Gaussian, a / (2 sigma^2); q = 0 is 0; sigma = 0 is infinite.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from scipy.special import gammaln, log_ndtr, logsumexp

_STOP_LOG_TERM = -30.0
"""Stop the fractional-order series at the first index whose terms are both below
exp(-30) (the reference truncation; see the module docstring)."""

_BLOCK = 256


def subsampled_gaussian_rdp(
    sampling_prob: float, noise_multiplier: float, orders: Iterable[float]
) -> np.ndarray:
    """RDP at each order of one step of the Poisson-subsampled Gaussian mechanism
    (multiply by the number of steps to compose them)."""
    q, sigma = float(sampling_prob), float(noise_multiplier)
    alphas = np.asarray(list(orders), dtype=np.float64)
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"sampling_prob must be in [0, 1], got {q}")
    if sigma < 0 or any(not a > 1 for a in alphas):
        raise ValueError("noise_multiplier must be >= 0 and every order > 1")
    if q == 0:
        return np.zeros(alphas.shape[0])
    if sigma == 0:
        return np.full(alphas.shape[0], np.inf)
    if q == 1:
        return alphas / (2.0 * sigma**2)
    out = np.empty(alphas.shape[0])
    for n, a in enumerate(alphas):
        if math.isinf(a):
            out[n] = math.inf
        elif float(a).is_integer():
            out[n] = _log_a_integer(q, sigma, int(a)) / (a - 1)
        else:
            out[n] = _log_a_fractional(q, sigma, float(a)) / (a - 1)
    return out


def _log_binom(a: float, i: np.ndarray) -> np.ndarray:
    """log |C(a, i)| for real a and integer i >= 0 (gammaln is log |Gamma|)."""
    return np.asarray(gammaln(a + 1) - gammaln(i + 1) - gammaln(a - i + 1))


def _log_expm1(x: np.ndarray) -> np.ndarray:
    """log(exp(x) - 1) for x > 0, without overflow for large x or loss for small x."""
    return np.asarray(x + np.log(-np.expm1(-x)))


def _log_a_integer(q: float, sigma: float, a: int) -> float:
    """log A_a for integer a >= 2 through log(A_a - 1) (see the module docstring)."""
    k = np.arange(2, a + 1, dtype=np.float64)
    log_terms = (
        _log_binom(float(a), k)
        + (a - k) * math.log1p(-q)
        + k * math.log(q)
        + _log_expm1((k * k - k) / (2.0 * sigma**2))
    )
    log_a_minus_1 = float(logsumexp(log_terms))
    return float(np.logaddexp(0.0, log_a_minus_1))


def _log_a_fractional(q: float, sigma: float, a: float) -> float:
    """log A_a for fractional a > 1 by the two series split at z0 (module docstring)."""
    log_q, log_1mq = math.log(q), math.log1p(-q)
    z0 = sigma**2 * (math.log1p(-q) - math.log(q)) + 0.5
    first_negative = math.ceil(a)  # C(a, i) < 0 exactly when i - ceil(a) is odd and >= 0
    logs: list[np.ndarray] = []
    signs: list[np.ndarray] = []
    start = 0
    while True:
        i = np.arange(start, start + _BLOCK, dtype=np.float64)
        j = a - i
        log_c = _log_binom(a, i)
        past = np.maximum(i - first_negative, 0.0)
        sign = np.where(past % 2 == 1, -1.0, 1.0)
        log_s0 = (
            log_c
            + i * log_q
            + j * log_1mq
            + (i * i - i) / (2 * sigma**2)
            + log_ndtr((z0 - i) / sigma)
        )
        log_s1 = (
            log_c
            + j * log_q
            + i * log_1mq
            + (j * j - j) / (2 * sigma**2)
            + log_ndtr((j - z0) / sigma)
        )
        small = np.flatnonzero(np.maximum(log_s0, log_s1) < _STOP_LOG_TERM)
        end = int(small[0]) + 1 if small.size else _BLOCK
        logs += [log_s0[:end], log_s1[:end]]
        signs += [sign[:end], sign[:end]]
        if small.size:
            break
        start += _BLOCK
    value, result_sign = logsumexp(np.concatenate(logs), b=np.concatenate(signs), return_sign=True)
    if result_sign <= 0:  # A_a >= 1 always; a non-positive sum is lost precision
        raise FloatingPointError(f"RDP series lost precision at order {a} (q={q}, sigma={sigma})")
    return float(value)
