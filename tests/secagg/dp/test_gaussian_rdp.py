"""secagg's RDP of the subsampled Gaussian (issue 16) against Opacus' compute_rdp and mpmath."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fedveil.secagg.dp import DEFAULT_ORDERS, GaussianEvent
from fedveil.secagg.dp.gaussian_rdp import subsampled_gaussian_rdp

_ORDERS = np.array([*DEFAULT_ORDERS, 1.01, 1.5, 2.5, 3.3, 12.5, 40.7, 100.25])
_QS = [1e-4, 1e-3, 0.01, 0.05, 0.1, 0.3, 0.5, 0.9, 0.99, 1.0]
_SIGMAS = [0.3, 0.5, 0.7, 1.0, 1.1, 2.0, 5.0, 10.0, 50.0]


def test_matches_opacus_compute_rdp_over_a_grid() -> None:
    rdp = pytest.importorskip("opacus.accountants.analysis.rdp")
    worst = 0.0
    for q, sigma in itertools.product(_QS, _SIGMAS):
        ref = np.array(rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=list(_ORDERS)))
        ours = subsampled_gaussian_rdp(q, sigma, _ORDERS)
        assert np.isfinite(ours).all()
        known = np.isfinite(ref)  # Opacus overflows to nan for some large orders; we do not
        assert known.mean() > 0.95
        diff = np.abs(ours[known] - ref[known])
        # 1e-9 relative, except where A_a = 1 + tiny: both sides then hold log(A_a) only to
        # float cancellation, below 1e-12 absolute (mpmath below says ours is not worse).
        allowed = 1e-9 * np.abs(ref[known]) + 1e-12 / (_ORDERS[known] - 1)
        assert (diff <= allowed).all(), (q, sigma, _ORDERS[known][diff > allowed])
        worst = max(worst, float((diff / ref[known]).max()))
    assert worst < 0.1


@pytest.mark.parametrize(
    ("q", "sigma", "order"),
    [(0.01, 1.1, 7.5), (0.01, 1.1, 8.0), (0.001, 0.7, 1.3), (0.2, 0.8, 2.7), (0.5, 50.0, 1.3)],
)
def test_matches_the_defining_integral(q: float, sigma: float, order: float) -> None:
    """A_a = E_{z~N(0,s^2)} [((1-q) + q exp((2z-1)/(2 s^2)))^a], integrated in 40 digits."""
    mp = pytest.importorskip("mpmath")
    with mp.workdps(40):
        qm, sm, am = mp.mpf(q), mp.mpf(sigma), mp.mpf(order)

        def integrand(z: object) -> object:
            ratio = mp.exp((2 * z - 1) / (2 * sm * sm))
            return mp.npdf(z, 0, sm) * ((1 - qm) + qm * ratio) ** am

        cuts = [-mp.inf, -10 * sm, 0, mp.mpf(1) / 2, 10 * sm + 1, mp.inf]
        exact = float(mp.log(mp.quad(integrand, cuts)) / (am - 1))
    assert subsampled_gaussian_rdp(q, sigma, [order])[0] == pytest.approx(exact, rel=1e-7)


def test_edge_cases_and_steps() -> None:
    orders = np.array([1.5, 2.0, 32.0])
    assert (subsampled_gaussian_rdp(1.0, 2.0, orders) == orders / 8).all()
    assert (subsampled_gaussian_rdp(0.0, 2.0, orders) == 0).all()
    assert np.isinf(subsampled_gaussian_rdp(0.1, 0.0, orders)).all()
    one = subsampled_gaussian_rdp(0.1, 1.0, orders)
    assert (np.diff(one) > 0).all()  # RDP grows with the order
    assert GaussianEvent(1.0, 0.1, steps=7).rdp(orders) == pytest.approx(7 * one, rel=1e-15)
    with pytest.raises(ValueError):
        subsampled_gaussian_rdp(1.5, 1.0, orders)
