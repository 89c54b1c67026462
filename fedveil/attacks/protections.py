"""The protections an audit compares, and the real aggregation rounds behind them.

Why injected: attacks/ must not import fedveil/ (the composition root), yet the claim
"this protection stops that attack" only means something on the vector the protection
really produces. So the rounds (in-process SecAgg+, CKKS, SecAgg+ with client-level
distributed DP) arrive as plain callables in `Aggregators`, built by fedveil/ for
benchmarks, tests and `fedveil audit`.

What each protection lets an observer see:
- none: one client's plain update (or the model a single party released).
- secagg: the weighted mean the SecAgg+ server decodes from n clients.
- ckks: the weighted mean a key-holding client decrypts (the server sees only
  ciphertexts; a key holder, or a server colluding with one, is the strongest observer).
- secagg+client-dp: the mean of n clipped updates with distributed discrete Gaussian
  noise of std noise_multiplier x clip_norm on the sum.
- dp-sgd: one client's update from Opacus-style DP-SGD: per-example clipping to
  clip_norm, Gaussian noise of std noise_multiplier x clip_norm on the batch sum.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from fedveil.attacks.views import Aggregator
from fedveil.errors import ConfigError
from fedveil.secagg.dp import GaussianEvent, PrivacyAccountant
from fedveil.secagg.dp.config import ClientDPConfig

PROTECTIONS: tuple[str, ...] = ("none", "secagg", "ckks", "secagg+client-dp", "dp-sgd")

DpAggregatorFactory = Callable[[ClientDPConfig], Aggregator]
"""A ClientDPConfig (its dim = the update's length) -> the DP round as an Aggregator."""


@dataclass(frozen=True)
class Aggregators:
    """The real rounds, injected by the composition root (fedveil.runners.aggregators)."""

    secagg: Aggregator
    ckks: Aggregator
    client_dp: DpAggregatorFactory


def check_protection(name: str) -> str:
    if name not in PROTECTIONS:
        raise ConfigError(f"unknown protection {name!r}; choose one of {', '.join(PROTECTIONS)}")
    return name


@dataclass(frozen=True)
class DPSettings:
    """The noise of the DP protections, stated as sigma and C (not only epsilon).

    clip_norm C and noise_multiplier z: std z*C on the clipped sum, per round (client
    DP, over the update of each client) or per step (DP-SGD, over each example's
    gradient). delta: the accountant's delta. `epsilon(steps, q)` is the accountant's
    answer for that many Gaussian releases at sampling rate q.
    """

    clip_norm: float = 1.0
    noise_multiplier: float = 1.0
    delta: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("clip_norm", "noise_multiplier"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(f"DPSettings.{name} must be a finite number > 0, got {value!r}")
        if not (isinstance(self.delta, float) and 0 < self.delta < 1):
            raise ConfigError(f"DPSettings.delta must be in (0, 1), got {self.delta!r}")

    def epsilon(self, steps: int = 1, sampling_prob: float = 1.0) -> float:
        accountant = PrivacyAccountant("rdp")
        accountant.compose(GaussianEvent(self.noise_multiplier, sampling_prob, steps))
        return float(accountant.epsilon(self.delta))

    def client_dp_config(self, dim: int, n_clients: int) -> ClientDPConfig:
        """Client-level DP for a cohort of n, every client honest (min_clients = n)."""
        return ClientDPConfig(
            clip_norm=self.clip_norm,
            noise_multiplier=self.noise_multiplier,
            min_clients=n_clients,
            max_cohort=n_clients,
            dim=dim,
        )
