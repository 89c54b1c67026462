"""The real in-process rounds behind each protection, wired for attacks/ (which may not
import fedveil/): SecAgg+, CKKS, and SecAgg+ with client-level distributed DP.
InProcessSecAgg runs the same rounds as a FedAvg aggregate for the demo's many-client
cohorts (`fedveil demo --clients-per-party N`)."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedveil.attacks.protections import Aggregators
from fedveil.clients.result import AggregateResult
from fedveil.errors import ConfigError, ProtocolError
from fedveil.runners.ckks_simulation import ckks_mean
from fedveil.runners.simulation import (
    Federation,
    make_config,
    run_round,
    secure_dp_mean,
    secure_mean,
)
from fedveil.secagg.crypto.identity import SigningIdentity
from fedveil.secagg.dp.report import RoundPrivacyReport
from fedveil.secagg.modes import DPKind
from fedveil.secagg.protocol.dp import RoundDP
from fedveil.secagg.protocol.graph import default_neighbours, default_threshold
from fedveil.secagg.protocol.messages import RoundResult
from fedveil.server.dp_policy import FederationDP
from fedveil.server.settings import RoundSettings


def real_aggregators() -> Aggregators:
    return Aggregators(
        secagg=secure_mean,
        ckks=ckks_mean,
        client_dp=lambda dp: functools.partial(secure_dp_mean, dp=dp),
    )


__all__ = ["InProcessSecAgg", "honest_floor", "real_aggregators"]


# --- the federated demo's many-client rounds --------------------------------------------


def honest_floor(cohort: int, threshold: int) -> int:
    """The fewest honest clients whose noise must carry a round's whole DP noise when a
    cohort is split into many clients: at least half the cohort (and the SecAgg+
    threshold). Why not the threshold alone, as the service's default: each client adds
    variance sigma^2 / min_clients, so the mean's noise std is z C sqrt(n / min_clients) / n;
    with min_clients = t (about 10 at n = 300) it shrinks only as 1 / sqrt(n t), with
    n / 2 as sqrt(2) / n. The price: the guarantee holds while at most half the cohort
    drops out or colludes with the server, and the clients refuse to unmask a smaller sum
    (secagg.protocol.client)."""
    return max(threshold, math.ceil(cohort / 2))


@dataclass
class InProcessSecAgg:
    """Real SecAgg+ rounds over `client_ids` in this process, as a FedAvg aggregate.

    Why: the gRPC service in one process runs a TLS client per party, which is fine for
    three parties and far too slow for hundreds (fedveil.demo.run uses it for one client
    per party, this for more). Every round is runners.simulation.run_round: every client
    masks (and, with DP, clips, rotates, quantises and adds its share of the discrete
    Gaussian noise) exactly as a service client does. With `dp_epsilon` the noise
    multiplier comes from the service's own calibration (server.dp_policy.FederationDP
    over a RoundSettings of this cohort, `rounds` rounds at dp_delta, dp_min_clients
    honest clients), and every released round is composed by its FederationAccountant,
    so `results[i].privacy` is the report the service would attach. A round past
    `rounds` is refused before anything is sent. Without DP the mean is weighted and
    quantised at `bits` with the clip just above the round's largest |value|.
    """

    client_ids: Sequence[str]
    dimension: int
    rounds: int
    dp_epsilon: float | None = None
    dp_delta: float = 1e-5
    dp_clip_norm: float = 1.0
    dp_min_clients: int | None = None
    """None: honest_floor(cohort, threshold)."""
    bits: int = 48
    results: list[AggregateResult] = field(default_factory=list)
    _federation: Federation = field(init=False, repr=False)
    _dp: FederationDP | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        ids = list(self.client_ids)
        if len(set(ids)) != len(ids) or len(ids) < 2:
            raise ConfigError(f"need at least two distinct clients, got {len(ids)}")
        self._federation = Federation({cid: SigningIdentity.generate() for cid in ids})
        if self.dp_epsilon is None:
            return
        n = len(ids)
        threshold = default_threshold(n, default_neighbours(n))
        floor = self.dp_min_clients or honest_floor(n, threshold)
        settings = RoundSettings(
            dimension=self.dimension,
            rounds=self.rounds,
            bits=self.bits,
            dp=DPKind.CLIENT,
            dp_target_epsilon=self.dp_epsilon,
            dp_delta=self.dp_delta,
            dp_clip_norm=self.dp_clip_norm,
            dp_min_clients=floor,
        )
        self._dp = FederationDP(settings, cohort=n, threshold=threshold)

    @property
    def round_dp(self) -> RoundDP | None:
        """Every round's DP terms (None without DP)."""
        return None if self._dp is None else self._dp.round_dp

    def __call__(self, updates: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
        """One secure round over every client (in `client_ids` order); the mean."""
        if len(updates) != len(self.client_ids):
            raise ConfigError(f"{len(updates)} updates for {len(self.client_ids)} clients")
        if len(self.results) >= self.rounds:
            raise ConfigError(f"all {self.rounds} planned rounds have run")
        vectors = {
            cid: np.asarray(vector, dtype=np.float64)
            for cid, (vector, _) in zip(self.client_ids, updates, strict=True)
        }
        weights = {
            cid: int(weight) for cid, (_, weight) in zip(self.client_ids, updates, strict=True)
        }
        result = self._round(len(self.results) + 1, vectors, weights)
        self.results.append(result)
        return result.weighted_mean

    def _round(
        self, round_id: int, vectors: dict[str, np.ndarray], weights: dict[str, int]
    ) -> AggregateResult:
        round_dp = self.round_dp
        if round_dp is None:
            clip = 1.01 * max(float(np.abs(v).max()) for v in vectors.values()) or 1.0
            config = make_config(
                self._federation,
                self.dimension,
                round_id=round_id,
                clip=clip,
                bits=self.bits,
                max_weight=max(weights.values()),
            )
            report = run_round(config, self._federation, vectors, weights)
        else:
            config = make_config(self._federation, self.dimension, round_id=round_id, dp=round_dp)
            report = run_round(config, self._federation, vectors)
        result = report.result
        if report.failure is not None or result is None:
            raise ProtocolError(f"secure round {round_id} failed: {report.failure}")
        return AggregateResult(
            round_id=round_id,
            survivors=tuple(result.survivors),
            total_weight=result.estimate.total_weight,
            weighted_mean=result.estimate.weighted_mean,
            error_bound=result.estimate.error_bound,
            privacy=self._account(round_dp, result),
        )

    def _account(self, round_dp: RoundDP | None, result: RoundResult) -> RoundPrivacyReport | None:
        """Compose a released DP round, as the service's FederationDP.account does."""
        if round_dp is None or self._dp is None or result.dp is None:
            return None
        return self._dp.accountant.record(
            round_dp.config,
            round_dp.events(),
            delta=round_dp.delta,
            sampling_prob=round_dp.sampling_prob,
            noise_std=result.dp.noise_std,
            contributors=result.dp.contributors,
        )
