"""The differencing attack on contribution releases, both ways.

A contribution run releases the secure aggregate of a coalition with and without one
organisation. Whoever sees both (the server, any party) subtracts them. Without DP that
recovers the organisation's update exactly; with client-level DP inside SecAgg+
(runners.aggregators.InProcessSecAgg, the service's calibration) the difference carries
both releases' noise, as calibrated: the recovery error is the DP noise the round
reports, and the recovered vector no longer points at the update.
"""

from __future__ import annotations

import numpy as np

from fedveil.runners.aggregators import InProcessSecAgg

DIM = 2000
WITHOUT = ["c0", "c1", "c2", "c3"]
WITH = [*WITHOUT, "target"]


def updates() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    vectors = {cid: rng.normal(size=DIM) for cid in WITH}
    return {cid: 0.5 * v / np.linalg.norm(v) for cid, v in vectors.items()}  # norm < clip


def differenced(epsilon: float | None) -> tuple[np.ndarray, InProcessSecAgg, InProcessSecAgg]:
    """target's update as the attacker recovers it: n' mean' - n mean (unit weights)."""
    x = updates()
    small = InProcessSecAgg(WITHOUT, DIM, rounds=1, dp_epsilon=epsilon)
    large = InProcessSecAgg(WITH, DIM, rounds=1, dp_epsilon=epsilon)
    mean_small = small([(x[c], 1) for c in WITHOUT])
    mean_large = large([(x[c], 1) for c in WITH])
    return mean_large * len(WITH) - mean_small * len(WITHOUT), small, large


def test_without_dp_the_differencing_attack_recovers_the_update_exactly() -> None:
    recovered, small, large = differenced(None)
    bound = len(WITH) * large.results[0].error_bound + len(WITHOUT) * small.results[0].error_bound
    assert np.abs(recovered - updates()["target"]).max() <= bound + 1e-12


def test_with_client_dp_the_recovery_error_is_the_calibrated_noise() -> None:
    recovered, small, large = differenced(8.0)
    target = updates()["target"]
    p_small, p_large = small.results[0].privacy, large.results[0].privacy
    assert p_small is not None and p_large is not None
    assert p_small.epsilon <= 8.0 + 1e-6 and p_large.epsilon <= 8.0 + 1e-6
    # the difference carries both releases' noise (std per element of each sum)
    expected = np.hypot(p_small.noise_std * len(WITHOUT), p_large.noise_std * len(WITH))
    rms = float(np.sqrt(np.mean((recovered - target) ** 2)))
    assert 0.85 * expected < rms < 1.15 * expected
    signal = float(np.sqrt(np.mean(target**2)))
    assert rms > 20 * signal  # the noise buries the update (0.5 / sqrt(2000) per element)
    cosine = float(recovered @ target / np.linalg.norm(recovered) / np.linalg.norm(target))
    assert cosine < 0.2
