"""Privacy events and the accountant, checked against independent computations."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant
from scipy import optimize, stats

from fedveil.errors import ConfigError
from fedveil.learner.prv import opacus_prv_epsilon
from fedveil.secagg.dp import (
    DEFAULT_ORDERS,
    AccountingMethod,
    DistributedDiscreteGaussianEvent,
    GaussianEvent,
    PrivacyAccountant,
    SkellamEvent,
)
from fedveil.secagg.dp import accounting as accounting_module
from fedveil.secagg.dp.events import poisson_subsampled_rdp

ORDERS = np.array(DEFAULT_ORDERS)


def _classic_rdp_epsilon(sigma: float, steps: int, delta: float) -> float:
    """Closed form of min over real alpha > 1 of T alpha/(2 sigma^2) + log(1/delta)/(alpha - 1)."""
    a, log_inv_delta = steps / (2 * sigma**2), math.log(1 / delta)
    return a + 2 * math.sqrt(a * log_inv_delta)


def _improved_rdp_epsilon(sigma: float, steps: int, delta: float) -> float:
    """The Balle et al. 2020 conversion the accountant uses, minimised over real alpha."""

    def eps(alpha: float) -> float:
        rdp = steps * alpha / (2 * sigma**2)
        return rdp + math.log1p(-1 / alpha) - (math.log(delta) + math.log(alpha)) / (alpha - 1)

    return float(optimize.minimize_scalar(eps, bounds=(1.001, 5000), method="bounded").fun)


def _exact_gaussian_epsilon(sigma: float, steps: int, delta: float) -> float:
    """Tight (eps, delta) of `steps` Gaussian mechanisms: one Gaussian with mu = sqrt(T)/sigma
    (Balle & Wang 2018; Dong et al. 2019), with
    delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2)."""
    mu = math.sqrt(steps) / sigma

    def gap(eps: float) -> float:
        return (
            stats.norm.cdf(-eps / mu + mu / 2)
            - math.exp(eps) * stats.norm.cdf(-eps / mu - mu / 2)
            - delta
        )

    return float(optimize.brentq(gap, 0.0, 500.0))


@pytest.mark.parametrize(
    ("sigma", "steps", "delta"), [(1.0, 10, 1e-5), (4.0, 100, 1e-6), (20.0, 1, 1e-5)]
)
def test_rdp_unsampled_gaussian_matches_analytic(sigma: float, steps: int, delta: float) -> None:
    accountant = PrivacyAccountant("rdp")
    accountant.compose(GaussianEvent(sigma, sampling_prob=1.0, steps=steps))
    eps = accountant.epsilon(delta)
    improved = _improved_rdp_epsilon(sigma, steps, delta)
    # Integer orders can only be a little worse than the best real order, never better.
    assert improved - 1e-9 <= eps <= improved * 1.01 + 1e-3
    # And the improved conversion is below the classic one.
    assert eps <= _classic_rdp_epsilon(sigma, steps, delta) + 1e-9
    assert eps > 0.7 * _classic_rdp_epsilon(sigma, steps, delta)


@pytest.mark.parametrize("method", ["prv", "pld"])
@pytest.mark.parametrize(("sigma", "steps"), [(1.0, 10), (3.0, 50)])
def test_tight_accountants_match_exact_gaussian_composition(
    method: str, sigma: float, steps: int
) -> None:
    delta = 1e-5
    accountant = PrivacyAccountant(method)
    accountant.compose(GaussianEvent(sigma), steps)  # `steps` rounds of one step each
    exact = _exact_gaussian_epsilon(sigma, steps, delta)
    eps = accountant.epsilon(delta)
    assert exact - 1e-3 <= eps <= exact + 0.03, (method, exact, eps)
    rdp = PrivacyAccountant("rdp")
    rdp.compose(GaussianEvent(sigma), steps)
    assert rdp.epsilon(delta) > eps  # RDP is a looser bound on the same mechanism


def test_subsampled_gaussian_prv_pld_rdp_agree() -> None:
    q, sigma, steps, delta = 0.01, 1.1, 1000, 1e-5
    event = GaussianEvent(sigma, sampling_prob=q, steps=steps)
    eps = {}
    for method in AccountingMethod:
        accountant = PrivacyAccountant(method)
        accountant.compose(event)
        eps[method.value] = accountant.epsilon(delta)
    # Independent: dp_accounting's own RDP accountant on the same orders and events.
    reference = rdp_privacy_accountant.RdpAccountant(orders=[float(a) for a in DEFAULT_ORDERS])
    reference.compose(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
    )
    assert eps["rdp"] == pytest.approx(reference.get_epsilon(delta), rel=1e-6)
    pld = pld_privacy_accountant.PLDAccountant()
    pld.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
    assert eps["pld"] == pytest.approx(pld.get_epsilon(delta), rel=1e-6)
    assert eps["prv"] == pytest.approx(eps["pld"], rel=0.03)
    assert eps["prv"] < eps["rdp"] < 1.3 * eps["prv"]
    assert 1.0 < eps["prv"] < 2.0  # about 1.52: not a degenerate answer


def test_rounds_compose() -> None:
    one = PrivacyAccountant("rdp")
    one.compose(GaussianEvent(2.0, 0.1, 10), 5)
    many = PrivacyAccountant("rdp")
    many.compose(GaussianEvent(2.0, 0.1, 50))
    assert one.epsilon(1e-5) == pytest.approx(many.epsilon(1e-5), rel=1e-12)
    fewer = PrivacyAccountant("rdp")
    fewer.compose(GaussianEvent(2.0, 0.1, 10), 4)
    assert fewer.epsilon(1e-5) < one.epsilon(1e-5)


def test_zhu_wang_bound_is_above_the_exact_subsampled_gaussian() -> None:
    for q, sigma in [(0.01, 1.0), (0.1, 2.0), (0.5, 5.0)]:
        event = GaussianEvent(sigma, sampling_prob=q)
        orders = np.arange(2, 200)
        exact = event.rdp(orders)
        generic = poisson_subsampled_rdp(event.unsampled_rdp(np.arange(2, 200)), q, orders)
        assert np.all(generic >= exact * (1 - 1e-9))
        # Exact at order 2 (the first two terms of the bound are the exact expansion).
        assert generic[0] == pytest.approx(exact[0], rel=1e-9)
        assert np.all(generic <= event.unsampled_rdp(orders) + 1e-12)
    full = poisson_subsampled_rdp(np.arange(2, 11) / 2.0, 1.0, np.arange(2, 11))
    assert np.allclose(full, np.arange(2, 11) / 2.0)


def test_distributed_discrete_gaussian_tends_to_gaussian() -> None:
    # Large per-client sigma: tau underflows to 0 and the RDP curve is the Gaussian's.
    event = DistributedDiscreteGaussianEvent(
        client_sigma=50.0, num_clients=4, l2_sensitivity=80.0, l1_sensitivity=2000.0, dim=1000
    )
    assert event.tau == 0.0
    z = math.sqrt(4) * 50.0 / 80.0
    assert event.nominal_noise_multiplier() == pytest.approx(z)
    assert np.allclose(event.unsampled_rdp(ORDERS), ORDERS / (2 * z**2))
    assert event.gaussian_equivalent().noise_multiplier == pytest.approx(z)
    for method in ("rdp", "prv"):
        a, b = PrivacyAccountant(method), PrivacyAccountant("rdp")
        a.compose(event, 10)
        b.compose(GaussianEvent(z), 10)
        assert a.epsilon(1e-5) == pytest.approx(b.epsilon(1e-5), rel=1e-9)


def test_distributed_discrete_gaussian_small_sigma_pays_tau() -> None:
    # Kairouz et al. Prop. 14 by hand for sigma = 0.6, n = 3, d = 10.
    sigma, n, d, l2s, l1s = 0.6, 3, 10, 2.0, 4.0
    event = DistributedDiscreteGaussianEvent(sigma, n, l2s, l1s, d)
    tau = 10 * (math.exp(-2 * math.pi**2 * 0.36 * 1 / 2) + math.exp(-2 * math.pi**2 * 0.36 * 2 / 3))
    assert event.tau == pytest.approx(tau, rel=1e-12)
    s = math.sqrt(n) * sigma
    for alpha in (2, 7, 30):
        expected = min(
            alpha / 2 * (l2s / s) ** 2 + tau * d,
            alpha / 2 * ((l2s / s) ** 2 + 2 * (l1s / s) * tau + tau**2 * d),
            alpha / 2 * (l2s / s + math.sqrt(d) * tau) ** 2,
        )
        assert event.unsampled_rdp(np.array([alpha]))[0] == pytest.approx(expected, rel=1e-12)
        assert expected > alpha / 2 * (l2s / s) ** 2  # tau costs something here
    # The dominating Gaussian really dominates.
    gauss = event.gaussian_equivalent()
    assert np.all(gauss.unsampled_rdp(ORDERS) >= event.unsampled_rdp(ORDERS) * (1 - 1e-12))


def test_skellam_rdp_matches_theorem_and_is_dominated() -> None:
    mu_client, n, l2s, l1s = 30.0, 5, 3.0, 7.0
    event = SkellamEvent(mu_client, n, l2s, l1s)
    mu = mu_client * n
    for alpha in (2, 10, 100):
        expected = alpha * l2s**2 / (2 * mu) + min(
            ((2 * alpha - 1) * l2s**2 + 6 * l1s) / (4 * mu**2), 3 * l1s / (2 * mu)
        )
        assert event.unsampled_rdp(np.array([alpha]))[0] == pytest.approx(expected, rel=1e-12)
    same_variance = GaussianEvent(math.sqrt(mu) / l2s)
    assert event.nominal_noise_multiplier() == pytest.approx(same_variance.noise_multiplier)
    assert np.all(event.unsampled_rdp(ORDERS) > same_variance.unsampled_rdp(ORDERS))
    dominating = event.gaussian_equivalent()
    assert np.all(dominating.unsampled_rdp(ORDERS) >= event.unsampled_rdp(ORDERS))
    # For large variance Skellam and Gaussian are nearly the same.
    big = SkellamEvent(1e8, 10, 1e4, 1e6)
    ratio = big.unsampled_rdp(ORDERS) / GaussianEvent(math.sqrt(1e9) / 1e4).unsampled_rdp(ORDERS)
    assert np.all((ratio >= 1) & (ratio < 1.001))


def test_discrete_events_fall_back_to_rdp_unless_asked() -> None:
    event = SkellamEvent(1e6, 10, 1e3, 1e5, sampling_prob=0.2)
    prv = PrivacyAccountant("prv")
    prv.compose(event, 20)
    report = prv.report(1e-5)
    assert report.method is AccountingMethod.RDP and report.rigorous
    assert "rdp" in report.note
    rdp = PrivacyAccountant("rdp")
    rdp.compose(event, 20)
    assert report.epsilon == rdp.epsilon(1e-5)
    approx = PrivacyAccountant("prv", discrete_as_gaussian=True)
    approx.compose(event, 20)
    approx_report = approx.report(1e-5)
    assert approx_report.method is AccountingMethod.PRV and not approx_report.rigorous
    assert 0 < approx_report.epsilon < report.epsilon
    assert report.to_dict()["accountant"] == "rdp"


def test_edge_cases() -> None:
    empty = PrivacyAccountant()
    assert empty.epsilon(1e-5) == 0.0
    silent = PrivacyAccountant()
    silent.compose(GaussianEvent(0.0, 0.5, 3))
    assert silent.epsilon(1e-5) == math.inf
    unsampled = PrivacyAccountant()
    unsampled.compose(GaussianEvent(0.0, 0.0, 3))  # never selected: no privacy cost
    assert unsampled.epsilon(1e-5) == 0.0
    with pytest.raises(ConfigError, match="delta"):
        empty.epsilon(0.0)
    with pytest.raises(ConfigError, match="accounting method"):
        PrivacyAccountant("moments")
    with pytest.raises(ConfigError, match="noise_multiplier"):
        GaussianEvent(-1.0)
    with pytest.raises(ConfigError, match="sampling_prob"):
        GaussianEvent(1.0, sampling_prob=1.5)
    with pytest.raises(ConfigError, match="client_sigma"):
        DistributedDiscreteGaussianEvent(0.3, 2, 1.0, 1.0, 4)
    with pytest.raises(ConfigError, match="DpEvent"):
        empty.compose("gaussian")  # type: ignore[arg-type]


def test_extended_does_not_change_the_original() -> None:
    base = PrivacyAccountant("rdp")
    base.compose(GaussianEvent(1.0, 0.1, 10))
    before = base.epsilon(1e-5)
    more = base.extended([GaussianEvent(1.0, 0.1, 10)])
    assert more.epsilon(1e-5) > before == base.epsilon(1e-5)
    assert len(base.events) == 1 and len(more.events) == 2


def test_calibrated_noise_is_the_least_that_fits_the_budget() -> None:
    import dataclasses

    from fedveil.secagg.dp import ClientDPConfig, calibrate_noise_multiplier

    base = ClientDPConfig(1.0, 1.0, min_clients=5, max_cohort=10, dim=20_000)

    def run(z: float) -> tuple[DistributedDiscreteGaussianEvent, ...]:
        events = dataclasses.replace(base, noise_multiplier=z).events(0.2, steps=30)
        return events  # type: ignore[return-value]

    z = calibrate_noise_multiplier(run, 8.0, 1e-5)
    accountant = PrivacyAccountant()
    accountant.compose(run(z)[0])
    assert accountant.epsilon(1e-5) <= 8.0
    tighter = PrivacyAccountant()
    tighter.compose(run(z * 0.99)[0])
    assert tighter.epsilon(1e-5) > 8.0
    dp_sgd = calibrate_noise_multiplier(lambda z: [GaussianEvent(z, 0.01, 1000)], 1.5, 1e-5)
    assert 1.0 < dp_sgd < 1.3  # Opacus' PRV says z = 1.1 gives about 1.53
    with pytest.raises(ConfigError, match="even noise_multiplier"):
        calibrate_noise_multiplier(lambda z: [GaussianEvent(z, 1.0, 10**6)], 0.01, 1e-5, high=2.0)


def test_prv_backend_is_injected(monkeypatch: pytest.MonkeyPatch) -> None:
    event = GaussianEvent(1.1, 0.01, 1000)
    assert accounting_module.installed_prv_backend() is opacus_prv_epsilon
    monkeypatch.setattr(accounting_module, "installed_prv_backend", lambda: None)
    bare = PrivacyAccountant("prv")
    bare.compose(event)
    with pytest.raises(ConfigError, match="PRV backend"):
        bare.epsilon(1e-5)
    calls = []

    def backend(history: object, delta: float, eps_error: float) -> float:
        calls.append((history, delta, eps_error))
        return 1.25

    injected = PrivacyAccountant("prv", prv_backend=backend)
    injected.compose(event, 2)
    assert injected.epsilon(1e-5) == 1.25
    assert calls == [([(1.1, 0.01, 2000)], 1e-5, 0.01)]
    assert injected.extended([event]).epsilon(1e-5) == 1.25
