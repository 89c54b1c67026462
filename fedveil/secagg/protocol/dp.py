"""The differential-privacy terms of a SecAgg+ round, bound into its session id.

Why they are part of the round config: under client-level DP every client adds only its
share of the noise, sized so that any `min_clients` honest clients together carry the
target. If a server could show one client "noise multiplier 1.0" and another "0.1", or
"at least 20 clients" to one and "at least 2" to another, the sum it unmasks would carry
less noise than anyone accounted. Binding every DP field into the session id (which every
key, signature and mask is derived from) makes divergent views fail to cancel: the round
fails closed, exactly like model inconsistency.

The accounting terms (client sampling rate, delta, planned rounds, target epsilon) are
bound too, so every client of a round is told the same story; a client still decides for
itself whether to believe the sampling rate (ClientPolicy.trust_server_sampling).

DP means are unweighted: every client counts once (weight 1). Weighting by example count
would multiply the sensitivity by the largest weight and make the weight element itself
a per-client secret; so under DP the `weight` a client passes is not used and the
result's total weight is the number of contributors.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from fedveil.errors import ConfigError
from fedveil.secagg.crypto.encoding import Field
from fedveil.secagg.crypto.kdf import Purpose, derive_key
from fedveil.secagg.dp.accounting import check_delta
from fedveil.secagg.dp.config import ClientDPConfig, NoisePlacement
from fedveil.secagg.dp.events import DpEvent
from fedveil.secagg.dp.stages import ClientDPPipeline

_ROTATION_IKM = b"fedveil-dp-rotation-v1"
"""The rotation is public (it serves utility, not secrecy), so its key material is a fixed
label; the session id, as HKDF salt, makes it fresh and shared within each round."""


def rotation_seed(session_id: bytes) -> bytes:
    """The 32-byte seed of a round's randomised Hadamard rotation, from its session id."""
    return derive_key(_ROTATION_IKM, Purpose.DP_ROTATION, session_id)


def _probability(value: object, name: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float | np.integer | np.floating)
        or not math.isfinite(float(value))
        or not 0 < float(value) <= 1
    ):
        raise ConfigError(f"{name} must be a number in (0, 1], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class RoundDP:
    """A round's DP configuration (the noise) and its accounting terms.

    config: clip, rotation, quantisation and noise every party runs (dim = the round's
        dimension; placement CLIENTS: distributed DP; SERVER: central DP, trusts the server).
    sampling_prob: the rate at which the server samples clients into a round, for
        privacy amplification by sampling (1.0: everyone takes part every round).
    delta: the delta the server reports epsilon at.
    planned_rounds: rounds the noise was calibrated for (0: the multiplier was given).
    target_epsilon: the whole-run epsilon it was calibrated for (0: none).
    """

    config: ClientDPConfig
    sampling_prob: float = 1.0
    delta: float = 1e-5
    planned_rounds: int = 0
    target_epsilon: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.config, ClientDPConfig):
            raise ConfigError(
                f"RoundDP.config must be a ClientDPConfig, got {type(self.config).__name__}"
            )
        if self.config.scale is None:
            # Pin the derived scale: what is published and compared is what is used.
            pinned = dataclasses.replace(self.config, scale=self.config.effective_scale)
            object.__setattr__(self, "config", pinned)
        object.__setattr__(self, "sampling_prob", _probability(self.sampling_prob, "sampling_prob"))
        object.__setattr__(self, "delta", check_delta(self.delta))
        rounds = self.planned_rounds
        if isinstance(rounds, bool) or not isinstance(rounds, int | np.integer) or rounds < 0:
            raise ConfigError(f"planned_rounds must be an integer >= 0, got {rounds!r}")
        object.__setattr__(self, "planned_rounds", int(rounds))
        eps = self.target_epsilon
        if (
            isinstance(eps, bool)
            or not isinstance(eps, int | float | np.integer | np.floating)
            or not math.isfinite(float(eps))
            or eps < 0
        ):
            raise ConfigError(f"target_epsilon must be a finite number >= 0, got {eps!r}")
        object.__setattr__(self, "target_epsilon", float(eps))

    @property
    def central(self) -> bool:
        """Whether the server adds the noise (central DP: trusts the server with the sum)."""
        return self.config.placement is NoisePlacement.SERVER

    @property
    def kind(self) -> str:
        """Either "client" (distributed DP) or "central"."""
        return "central" if self.central else "client"

    def events(self, sampling_prob: float | None = None) -> tuple[DpEvent, ...]:
        """The privacy events of one round, at the published sampling rate by default."""
        q = self.sampling_prob if sampling_prob is None else sampling_prob
        return self.config.events(q, steps=1)

    def pipeline(self, session_id: bytes) -> ClientDPPipeline:
        """The round's stage stack, its rotation seeded from the session id."""
        seed = rotation_seed(session_id) if self.config.rotate else None
        return ClientDPPipeline(self.config, rotation_seed=seed)

    def canonical_fields(self) -> tuple[Field, ...]:
        """Every field that changes what is computed or accounted, for the session id."""
        c = self.config
        return (
            b"dp-v1",
            c.placement.value,
            c.mechanism.value,
            repr(float(c.clip_norm)),
            repr(float(c.noise_multiplier)),
            c.min_clients,
            c.max_cohort,
            c.dim,
            c.bits,
            int(c.rotate),
            repr(float(c.effective_scale)),
            repr(float(c.rounding_beta)),
            repr(float(c.coordinate_clip_prob)),
            repr(float(c.overflow_prob)),
            repr(self.sampling_prob),
            repr(self.delta),
            self.planned_rounds,
            repr(self.target_epsilon),
        )

    def to_dict(self) -> dict[str, float | int | str | bool]:
        return {
            "kind": self.kind,
            **self.config.to_dict(),
            "sampling_prob": self.sampling_prob,
            "delta": self.delta,
            "planned_rounds": self.planned_rounds,
            "target_epsilon": self.target_epsilon,
        }


@dataclass(frozen=True)
class DPInputSummary:
    """What a client may log about its own DP encoding; none of it leaves the client.

    norm: the update's L2 norm before clipping; clipped: whether it was scaled down to
    clip_norm; coordinates_clipped: rotated coordinates cut at the per-coordinate clip
    (rare by construction); rounding_attempts: conditional-rounding draws.
    """

    norm: float
    clipped: bool
    coordinates_clipped: int
    rounding_attempts: int
