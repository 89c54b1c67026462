"""The protections an audit compares: one object per protection, and the real rounds
behind them.

Why objects and not strings: what a protection lets an observer see, which aggregation
mode it runs and which DP it carries used to be re-derived at each call site from its
spelling (`protection in ("secagg", "ckks")`), so adding a protection meant finding every
such comparison. Now each `Protection` has one `ProtectionSpec` and code dispatches on its
attributes (`spec.dp`, `spec.aggregation`, `spec.observed_alone`).

Why injected rounds: attacks/ must not import fedveil/ (the composition root), yet the
claim "this protection stops that attack" only means something on the vector the
protection really produces. So the rounds (in-process SecAgg+, CKKS, SecAgg+ with
client-level distributed DP) arrive as plain callables in `Aggregators`, built by
fedveil/ for benchmarks, tests and `fedveil audit`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from fedveil.attacks.families import FAMILIES, Family
from fedveil.errors import ConfigError
from fedveil.secagg.dp import GaussianEvent, PrivacyAccountant
from fedveil.secagg.dp.config import ClientDPConfig
from fedveil.secagg.modes import AggregationMode, DPKind


class Protection(enum.StrEnum):
    """A protection the audit compares (the value is the TOML / report.json spelling)."""

    NONE = "none"
    SECAGG = "secagg"
    CKKS = "ckks"
    SECAGG_CLIENT_DP = "secagg+client-dp"
    DP_SGD = "dp-sgd"
    CKKS_COLLUDER = "ckks+colluder"

    @property
    def spec(self) -> ProtectionSpec:
        return PROTECTION_SPECS[self]


@dataclass(frozen=True)
class ProtectionSpec:
    """What one protection is, for the attacks that measure it.

    observer_sees: the view the update attacks get (the report's words).
    aggregation: the mode the federation's rounds run in.
    dp: whose noise protects what (DPKind.CLIENT: on the aggregate; SAMPLE: DP-SGD in
      each party's training).
    observed_alone: the update attacks see one client's own update (no cohort to hide
      in): a plain upload, or a DP-SGD upload whose guarantee is per client.
    default_claims: the families this protection claims to stop (a claimed cell can
      breach its thresholds; the others are reported as expected leaks or clean).
    update_only: a row about what the server sees of the inputs only; its released model
      is another row's (no output cells of its own).
    colluding: the observer is the server together with one enrolled client (it holds
      that client's keys).
    """

    protection: Protection
    observer_sees: str
    aggregation: AggregationMode
    dp: DPKind
    observed_alone: bool
    default_claims: tuple[Family, ...]
    update_only: bool = False
    colluding: bool = False


PROTECTION_SPECS: Mapping[Protection, ProtectionSpec] = MappingProxyType(
    {
        # Nothing protects a plain update or a plainly trained model, except the filter.
        Protection.NONE: ProtectionSpec(
            Protection.NONE,
            "one client's plain update (or the model a single party released)",
            AggregationMode.PLAINTEXT,
            DPKind.NONE,
            observed_alone=True,
            default_claims=(Family.EXTRACTION_FILTERED,),
        ),
        # The server (or a key holder) learns only the aggregate of many clients. Nothing
        # stops the released model from memorising: secure aggregation protects inputs.
        # Not claimed: the cohort's bag of caption tokens. A LoRA on the LM head writes
        # each target token into its own row of the update, with no rank bound, and a sum
        # keeps every row (attacks/update/token_bag.py): like the label counts, the union
        # of the words the cohort wrote is part of what an aggregate reveals.
        Protection.SECAGG: ProtectionSpec(
            Protection.SECAGG,
            "the weighted mean the SecAgg+ server decodes from n clients",
            AggregationMode.SECAGG,
            DPKind.NONE,
            observed_alone=False,
            default_claims=(Family.INVERSION, Family.LABELS, Family.EXTRACTION_FILTERED),
        ),
        Protection.CKKS: ProtectionSpec(
            Protection.CKKS,
            "the weighted mean a key-holding client decrypts (the server sees only "
            "ciphertexts; a key holder, or a server colluding with one, is the strongest "
            "observer)",
            AggregationMode.CKKS,
            DPKind.NONE,
            observed_alone=False,
            default_claims=(Family.INVERSION, Family.LABELS, Family.EXTRACTION_FILTERED),
        ),
        # DP bounds what anything downstream of the noise can learn: updates and outputs.
        Protection.SECAGG_CLIENT_DP: ProtectionSpec(
            Protection.SECAGG_CLIENT_DP,
            "the mean of n clipped updates with distributed discrete Gaussian noise of std "
            "noise_multiplier x clip_norm on the sum",
            AggregationMode.SECAGG,
            DPKind.CLIENT,
            observed_alone=False,
            default_claims=FAMILIES,
        ),
        Protection.DP_SGD: ProtectionSpec(
            Protection.DP_SGD,
            "one client's update from Opacus-style DP-SGD: per-example clipping to "
            "clip_norm, Gaussian noise of std noise_multiplier x clip_norm on the batch sum",
            AggregationMode.SECAGG,
            DPKind.SAMPLE,
            observed_alone=True,
            default_claims=FAMILIES,
        ),
        # A server colluding with any one enrolled CKKS client: every client holds the
        # secret key (the key holder seals it to all), so the server decrypts one upload
        # alone (attacks/active/ckks_colluder.py). Nothing is claimed: the row shows what
        # CKKS leaves open to a collusion SecAgg+ (with t > c) does not.
        Protection.CKKS_COLLUDER: ProtectionSpec(
            Protection.CKKS_COLLUDER,
            "one client's update, decrypted from its own CKKS upload by a server colluding "
            "with any other enrolled client",
            AggregationMode.CKKS,
            DPKind.NONE,
            observed_alone=True,
            default_claims=(),
            update_only=True,
            colluding=True,
        ),
    }
)

PROTECTIONS: tuple[Protection, ...] = tuple(Protection)


def parse_protection(value: object, what: str = "protection") -> Protection:
    """`value` as a Protection; ConfigError naming `what` and the choices otherwise."""
    if isinstance(value, Protection):
        return value
    if isinstance(value, str) and value in Protection._value2member_map_:
        return Protection(value)
    choices = ", ".join(p.value for p in Protection)
    raise ConfigError(f"unknown {what} {value!r}; choose one of {choices}")


Aggregator = Callable[[Sequence[np.ndarray], Sequence[int]], tuple[np.ndarray, int]]
"""(client updates, client weights) -> (weighted mean the server decodes, total weight)."""

DpAggregatorFactory = Callable[[ClientDPConfig], Aggregator]
"""A ClientDPConfig (its dim = the update's length) -> the DP round as an Aggregator."""


@dataclass(frozen=True)
class Aggregators:
    """The real rounds, injected by the composition root (fedveil.runners.aggregators)."""

    secagg: Aggregator
    ckks: Aggregator
    client_dp: DpAggregatorFactory

    def secure(self, mode: AggregationMode) -> Aggregator:
        """The round of a secure aggregation mode (SecAgg+ or CKKS)."""
        if mode is AggregationMode.SECAGG:
            return self.secagg
        if mode is AggregationMode.CKKS:
            return self.ckks
        raise ConfigError(f"{mode.value} is not a secure aggregation mode")


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

    @property
    def sigma(self) -> float:
        """The noise std on the clipped sum, z*C."""
        return self.clip_norm * self.noise_multiplier

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
