"""Noise samplers against their exact distributions (chi-square), and their randomness source.

Each sampler runs from a fixed AES-CTR seed, so the tests are deterministic; each
goodness-of-fit test is paired with a near-miss distribution that the same statistic must
reject, so a test that passes also shows it could fail.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import pytest
from scipy import special, stats

from fedveil.errors import ConfigError
from fedveil.secagg.dp.randomness import CryptoRandom
from fedveil.secagg.dp.sampling import (
    bernoulli_exp_neg,
    sample_discrete_gaussian,
    sample_discrete_laplace,
    sample_poisson,
    sample_skellam,
)


def _rng(*label: object) -> CryptoRandom:
    return CryptoRandom(hashlib.sha256(repr(label).encode()).digest())


def _chi2_pvalue(samples: np.ndarray, log_pmf: Callable[[np.ndarray], np.ndarray]) -> float:
    """Pearson chi-square of integer samples against a pmf, pooling cells with < 5 expected
    into the two tails."""
    n = samples.shape[0]
    lo, hi = int(samples.min()) - 3, int(samples.max()) + 3
    support = np.arange(lo - 200, hi + 200)
    pmf = np.exp(log_pmf(support))
    pmf /= pmf.sum()  # truncation far in the tails changes nothing measurable
    expected = n * pmf
    keep = expected >= 5
    first, last = np.flatnonzero(keep)[[0, -1]]
    counts = np.bincount(samples - (lo - 200), minlength=support.shape[0]).astype(float)
    observed = np.concatenate(
        ([counts[:first].sum()], counts[first : last + 1], [counts[last + 1 :].sum()])
    )
    exp_cells = np.concatenate(
        ([expected[:first].sum()], expected[first : last + 1], [expected[last + 1 :].sum()])
    )
    mask = exp_cells > 0
    stat = float(((observed[mask] - exp_cells[mask]) ** 2 / exp_cells[mask]).sum())
    return float(stats.chi2.sf(stat, int(mask.sum()) - 1))


def _dgauss_log_pmf(sigma2: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda k: -(k.astype(float) ** 2) / (2 * sigma2)


@pytest.mark.parametrize("sigma2", [0.7, 2.5, 40.0])
def test_discrete_gaussian_pmf(sigma2: float) -> None:
    x = sample_discrete_gaussian(sigma2, 60_000, _rng("dg", sigma2))
    assert x.dtype == np.int64
    assert _chi2_pvalue(x, _dgauss_log_pmf(sigma2)) > 1e-4
    # Power: a 10% different variance is rejected by the same test on the same samples.
    assert _chi2_pvalue(x, _dgauss_log_pmf(sigma2 * 1.1)) < 1e-4


def test_discrete_gaussian_large_sigma_moments() -> None:
    sigma2, n = 1e6, 200_000
    x = sample_discrete_gaussian(sigma2, n, _rng("dg-large")).astype(float)
    assert abs(x.mean()) < 5 * math.sqrt(sigma2 / n)
    ratio = x.var(ddof=1) / sigma2  # (n-1) s^2 / sigma^2 ~ chi2(n-1)
    lo, hi = stats.chi2.ppf([1e-5, 1 - 1e-5], n - 1) / (n - 1)
    assert lo < ratio < hi


def test_discrete_gaussian_exact_path_matches_too() -> None:
    # margin=1 sends every Bernoulli(exp(-g)) decision through the exact decimal path.
    sigma2 = 1.5
    x = sample_discrete_gaussian(sigma2, 3_000, _rng("dg-exact"), margin=1.0)
    assert _chi2_pvalue(x, _dgauss_log_pmf(sigma2)) > 1e-4
    assert _chi2_pvalue(x, _dgauss_log_pmf(sigma2 * 1.6)) < 1e-3


@pytest.mark.parametrize("margin", [2.0**-40, 1.0])
def test_bernoulli_exp_neg_frequencies(margin: float) -> None:
    n = 20_000 if margin < 1 else 4_000
    gammas = [Fraction(0), Fraction(7, 10), Fraction(3)]
    for g in gammas:
        hits = bernoulli_exp_neg(
            np.full(n, float(g)), lambda _i, g=g: g, _rng("bern", g, margin), margin=margin
        )
        p = math.exp(-float(g))
        assert abs(hits.mean() - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-12


def test_discrete_laplace_pmf() -> None:
    t = 3
    x = sample_discrete_laplace(t, 50_000, _rng("dlap"))
    assert _chi2_pvalue(x, lambda k: -np.abs(k) / t) > 1e-4
    assert _chi2_pvalue(x, lambda k: -np.abs(k) / (t * 1.1)) < 1e-4


@pytest.mark.parametrize("lam", [0.5, 3.0, 40.0, 900.0])
def test_poisson_pmf(lam: float) -> None:
    x = sample_poisson(lam, 50_000, _rng("poisson", lam))
    assert x.min() >= 0
    assert _chi2_pvalue(x, lambda k: stats.poisson.logpmf(k, lam)) > 1e-4
    assert _chi2_pvalue(x, lambda k: stats.poisson.logpmf(k, lam * 1.05 + 0.05)) < 1e-4


def test_poisson_large_mean_moments() -> None:
    lam, n = 1e10, 200_000
    x = sample_poisson(lam, n, _rng("poisson-large")).astype(float)
    assert abs(x.mean() - lam) < 5 * math.sqrt(lam / n)
    ratio = x.var(ddof=1) / lam
    lo, hi = stats.chi2.ppf([1e-5, 1 - 1e-5], n - 1) / (n - 1)
    assert lo < ratio < hi


@pytest.mark.parametrize("variance", [8.0, 60.0])
def test_skellam_pmf(variance: float) -> None:
    x = sample_skellam(variance, 50_000, _rng("skellam", variance))
    mu = variance / 2

    def log_pmf(k: np.ndarray, mu: float = mu) -> np.ndarray:
        # e^{-2 mu} I_|k|(2 mu), with the exponentially scaled Bessel function.
        return np.log(special.ive(np.abs(k), 2 * mu))

    assert _chi2_pvalue(x, log_pmf) > 1e-4
    assert _chi2_pvalue(x, lambda k: log_pmf(k, mu * 1.1)) < 1e-4


def test_samplers_never_touch_numpy_random(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("privacy noise must not come from numpy.random")

    for name in ("default_rng", "random", "randint", "normal", "poisson", "Generator"):
        monkeypatch.setattr(np.random, name, refuse)
    rng = CryptoRandom()
    assert sample_discrete_gaussian(4.0, 100, rng).shape == (100,)
    assert sample_skellam(50.0, 100, rng).shape == (100,)
    assert sample_poisson(3.0, 100, rng).shape == (100,)


def test_crypto_random_is_seeded_aes_ctr_and_fresh_by_default() -> None:
    seed = bytes(range(32))
    a, b = CryptoRandom(seed), CryptoRandom(seed)
    assert np.array_equal(a.uint64(10), b.uint64(10))
    assert not np.array_equal(a.uint64(10), a.uint64(10))  # the stream moves on
    assert not np.array_equal(CryptoRandom().uint64(4), CryptoRandom().uint64(4))
    from fedveil.secagg.crypto.prg import keystream

    assert CryptoRandom(seed).token(64) == keystream(seed, 64)  # the SecAgg PRG's stream
    with pytest.raises(ConfigError, match="32 bytes"):
        CryptoRandom(b"short")


def test_crypto_random_below_is_uniform() -> None:
    rng = _rng("below")
    for bound in (1, 2, 7, 1000):
        x = rng.below(30_000, bound)
        assert x.min() >= 0 and x.max() < bound
        if bound > 1:
            counts = np.bincount(x, minlength=bound)
            assert stats.chisquare(counts).pvalue > 1e-4
    bits = rng.bits(40_000)
    assert abs(bits.mean() - 0.5) < 5 * math.sqrt(0.25 / 40_000)


def test_sampler_input_validation() -> None:
    rng = CryptoRandom()
    with pytest.raises(ConfigError, match="sigma"):
        sample_discrete_gaussian(-1.0, 3, rng)
    with pytest.raises(ConfigError, match="sigma"):
        sample_discrete_gaussian(float("nan"), 3, rng)
    with pytest.raises(ConfigError, match="Poisson mean"):
        sample_poisson(-2.0, 3, rng)
    with pytest.raises(ConfigError, match="integer"):
        sample_discrete_laplace(0, 3, rng)
    assert not sample_discrete_gaussian(0.0, 5, rng).any()
    assert not sample_skellam(0.0, 5, rng).any()
