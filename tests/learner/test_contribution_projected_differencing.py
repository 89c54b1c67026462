"""The differencing attack on projected contribution releases, both ways.

A projected scoring releases, per organisation and round, the mean of its clients'
projected numbers (learner.contribution.projected_scores). A server that gets the same
organisation's release with and without one office (the office dropped out, or the
server asked a sub-cohort) subtracts them: n' m' - n m is that office's number. Without
DP the attack recovers it exactly; with client-level DP inside SecAgg+ (dimension-1
runners.aggregators.InProcessSecAgg, the service's calibration) its error is both
releases' calibrated noise, and guessing the sign of the office's number from it is
far from certain. (A server's crafted direction gains nothing either: clients
normalise it, tests/learner/test_contribution_projected.py.)
"""

from __future__ import annotations

import numpy as np

from fedveil.runners.aggregators import InProcessSecAgg

CLIP = 0.5
TRIALS = 60
WITHOUT = ["o0", "o1", "o2", "o3"]
WITH = [*WITHOUT, "target"]


def numbers(trial: int) -> tuple[dict[str, float], float]:
    """Every office's projected number in one trial, the target's sign alternating."""
    rng = np.random.default_rng(trial)
    others = {cid: float(rng.uniform(-CLIP, CLIP)) for cid in WITHOUT}
    target = 0.8 * CLIP * (1 if trial % 2 == 0 else -1)
    return {**others, "target": target}, target


def attack(epsilon: float | None) -> tuple[np.ndarray, np.ndarray, float]:
    """(recovered, true target numbers, the calibrated std of one recovery's error)."""
    small = InProcessSecAgg(WITHOUT, 1, rounds=TRIALS, dp_epsilon=epsilon, dp_clip_norm=CLIP)
    large = InProcessSecAgg(WITH, 1, rounds=TRIALS, dp_epsilon=epsilon, dp_clip_norm=CLIP)
    recovered, truth = [], []
    for trial in range(TRIALS):
        x, target = numbers(trial)
        m_small = float(small([(np.array([x[c]]), 1) for c in WITHOUT])[0])
        m_large = float(large([(np.array([x[c]]), 1) for c in WITH])[0])
        recovered.append(m_large * len(WITH) - m_small * len(WITHOUT))
        truth.append(target)
    if epsilon is None:
        bound = (
            len(WITH) * large.results[0].error_bound + len(WITHOUT) * small.results[0].error_bound
        )
        return np.array(recovered), np.array(truth), bound
    p_small, p_large = small.results[-1].privacy, large.results[-1].privacy
    assert p_small is not None and p_large is not None
    assert p_small.epsilon <= epsilon * 1.001 and p_large.epsilon <= epsilon * 1.001
    std = float(np.hypot(p_small.noise_std * len(WITHOUT), p_large.noise_std * len(WITH)))
    return np.array(recovered), np.array(truth), std


def test_without_dp_differencing_recovers_the_office_number_exactly() -> None:
    recovered, truth, bound = attack(None)
    assert np.abs(recovered - truth).max() <= bound + 1e-9
    assert np.all(np.sign(recovered) == np.sign(truth))  # the sign attack always wins


def test_with_client_dp_the_recovery_error_is_the_calibrated_noise() -> None:
    recovered, truth, std = attack(8.0)
    error = recovered - truth
    rms = float(np.sqrt(np.mean(error**2)))
    assert 0.75 * std < rms < 1.25 * std  # 60 draws: the RMS is within ~9% of sigma (1 s.d.)
    assert abs(float(np.mean(error))) < 4 * std / np.sqrt(TRIALS)  # unbiased: noise, no leak
    assert std > CLIP  # one release's noise exceeds the largest number an office can send
    accuracy = float(np.mean(np.sign(recovered) == np.sign(truth)))
    assert accuracy < 0.95  # sign of a number of size 0.8 C: no longer certain
