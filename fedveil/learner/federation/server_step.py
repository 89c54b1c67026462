"""The server's step on a round's mean: a learning rate and momentum (FedAvgM).

Why: under client-level DP every update is clipped to C, so the released mean is at
most C long however far the clients moved, and the per-round noise makes a single
round's direction unreliable. DP-FedAvg with server momentum (McMahan et al. 2018,
"Learning differentially private recurrent language models"; Hsu et al. 2019, FedAvgM)
rescales the mean (learning rate) and accumulates it over rounds (momentum), so the
signal adds up across rounds while independent noise partly cancels. It only
transforms what the secure aggregate already released, so it is post-processing: it
spends no privacy and needs no change to the protocol or the accountant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedveil.errors import ConfigError
from fedveil.learner.lora.aggregation import Aggregator, WeightedUpdate


@dataclass(frozen=True)
class ServerStep:
    """x_{t+1} = x_t + learning_rate * v_t, v_t = momentum * v_{t-1} + mean_t."""

    learning_rate: float = 1.0
    momentum: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(
                f"server learning rate must be positive and finite, got {self.learning_rate}"
            )
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise ConfigError(f"server momentum must be in [0, 1), got {self.momentum}")

    @property
    def is_plain(self) -> bool:
        """FedAvg's own step (the mean applied as it is)."""
        return self.learning_rate == 1.0 and self.momentum == 0.0

    def around(self, aggregate: Aggregator) -> Aggregator:
        """`aggregate` followed by this step (itself when the step is plain)."""
        return aggregate if self.is_plain else ServerMomentum(aggregate, self)


@dataclass
class ServerMomentum:
    """An aggregate whose output is the server step, not the mean: run_round applies it
    to every party's round-start adapter as it would apply the mean."""

    aggregate: Aggregator
    step: ServerStep
    _velocity: np.ndarray | None = field(default=None, init=False, repr=False)

    def __call__(self, updates: Sequence[WeightedUpdate]) -> np.ndarray:
        mean = np.asarray(self.aggregate(updates), dtype=np.float64)
        if self._velocity is None:
            self._velocity = mean
        else:
            self._velocity = self.step.momentum * self._velocity + mean
        return self.step.learning_rate * self._velocity
