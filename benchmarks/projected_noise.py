"""A plaintext stand-in for a larger cohort's DP mean, shared by the benchmarks that
project a cohort too large for this machine (dp_cohort_bench `--project`,
contribution_cumulative_bench `--noise-of`). NOT a DP mechanism: a projection."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from fedveil.runners.aggregators import InProcessSecAgg
from fedveil.secagg.protocol.dp import RoundDP


def calibrated_mean_noise_std(
    cohort: int, rounds: int, epsilon: float, delta: float, clip: float
) -> float:
    """The per-element std of the noise on the mean that the service's calibration gives
    a cohort of `cohort` clients for `rounds` releases at (epsilon, delta) and clip C:
    z C sqrt(cohort / min_clients) / cohort, min_clients = honest_floor."""
    ids = [f"c{i}" for i in range(cohort)]
    secagg = InProcessSecAgg(
        ids, 1, rounds=rounds, dp_epsilon=epsilon, dp_delta=delta, dp_clip_norm=clip
    )
    assert secagg.round_dp is not None
    config = secagg.round_dp.config
    return config.noise_multiplier * clip * math.sqrt(cohort / config.min_clients) / cohort


@dataclasses.dataclass
class ProjectedNoise:
    """Every update clipped to C, the unweighted mean, plus Gaussian noise of the std a
    cohort of another size would get (calibrated_mean_noise_std). Why: a cohort of several
    hundred offices does not fit the machine, but what such a cohort changes is (mostly)
    the noise on the mean; training n offices and adding the larger cohort's noise shows
    whether that noise level still works. It assumes the clipped mean of the larger
    cohort looks like this one's (its offices would each hold fewer samples)."""

    clip: float
    std: float
    rng: np.random.Generator = dataclasses.field(default_factory=np.random.default_rng)

    @property
    def round_dp(self) -> RoundDP | None:
        """No DP terms: a projection is not a release any ledger can account."""
        return None

    def __call__(self, updates: Any) -> np.ndarray:
        clipped = []
        for vector, _ in updates:
            v = np.asarray(vector, dtype=np.float64)
            clipped.append(v * min(1.0, self.clip / max(float(np.linalg.norm(v)), 1e-12)))
        mean = np.mean(clipped, axis=0)
        return mean + self.rng.normal(0.0, self.std, size=mean.shape)
