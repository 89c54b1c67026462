"""What a round gives its client: the aggregate, checked before it is accepted.

Why acceptance is one function for every mode: whatever protected the round (SecAgg, CKKS
or nothing), the client must refuse an aggregate no honest cohort could produce
(secagg.protocol.aggregate_bounds) and chain the result exactly as it received it into
the next round's model hash (secagg.protocol.model_chain); each mode's driver only says
what its round promised (the cohort and value limits) and what it downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from fedveil.clients.streams import TensorLayout
from fedveil.errors import ConfigError
from fedveil.proto import aggregation_pb2 as pb
from fedveil.secagg.dp.accounting import EpsilonReport
from fedveil.secagg.dp.report import RoundPrivacyReport
from fedveil.secagg.modes import AggregationMode
from fedveil.secagg.protocol.aggregate_bounds import (
    CohortLimits,
    ValueLimits,
    check_cohort,
    check_values,
)
from fedveil.secagg.protocol.model_chain import ModelChain, mean_payload_digest, result_digest


@dataclass(frozen=True, eq=False)
class AggregateResult:
    """The round's weighted mean over its survivors, as the server streamed it.

    DP rounds: the mean is unweighted (total_weight = contributors) and noised;
    error_bound bounds the rounding error only. `privacy` is the server's report of the
    round (`privacy.epsilon`: the federation's cumulative epsilon at `privacy.delta`,
    `privacy.round_epsilon`, `privacy.noise_multiplier`, `privacy.clip_norm`,
    `privacy.noise_std` per element; `privacy.to_dict()` for JSON); `privacy_spent` is this
    client's own ledger after the round (None without a privacy budget).
    `result_digest`: the digest of the result as this client received it; the client's
    next round's model hash chains it (secagg.protocol.model_chain).
    """

    round_id: int
    survivors: tuple[str, ...]
    total_weight: int
    weighted_mean: np.ndarray
    error_bound: float
    layout: TensorLayout | None = None
    privacy: RoundPrivacyReport | None = None
    privacy_spent: EpsilonReport | None = None
    result_digest: bytes | None = None

    @classmethod
    def from_header(
        cls,
        header: pb.ResultHeader,
        mean: np.ndarray,
        layout: TensorLayout | None,
        *,
        privacy: RoundPrivacyReport | None = None,
        privacy_spent: EpsilonReport | None = None,
    ) -> AggregateResult:
        """The result of a round whose server streamed a header and the float mean."""
        return cls(
            round_id=int(header.round_id),
            survivors=tuple(header.survivors),
            total_weight=int(header.total_weight),
            weighted_mean=mean,
            error_bound=float(header.error_bound),
            layout=layout,
            privacy=privacy,
            privacy_spent=privacy_spent,
        )

    def as_tensors(self, layout: TensorLayout | None = None) -> dict[str, np.ndarray]:
        """The mean split into named float64 tensors (by `layout`, or the round's own)."""
        chosen = layout or self.layout
        if chosen is None:
            raise ConfigError("no tensor layout: the update was a flat vector; pass a layout")
        return chosen.split(self.weighted_mean)


@dataclass(frozen=True)
class Received:
    """A mode driver's answer: the result as downloaded, and what the round promised.

    `mode` and `header` (None where the mode streams no header fields into the digest)
    and `payload_sha256` feed the result digest; `cohort` and `values` bound what an
    honest cohort of the round could have produced (`values` takes the survivors and
    the total weight).
    """

    result: AggregateResult
    mode: str
    header: pb.ResultHeader | None
    payload_sha256: bytes
    cohort: CohortLimits
    values: Callable[[int, int], ValueLimits]


def mean_received(
    header: pb.ResultHeader,
    mean: np.ndarray,
    layout: TensorLayout | None,
    *,
    mode: AggregationMode,
    cohort: CohortLimits,
    values: Callable[[int, int], ValueLimits],
    privacy: RoundPrivacyReport | None = None,
    privacy_spent: EpsilonReport | None = None,
    payload_sha256: bytes | None = None,
) -> Received:
    """What a SecAgg or plaintext round gave: the header and the float64 mean as streamed.

    One place for the drivers and for a party that fetches a missed round's result
    (clients.catch_up): the payload digest covers the mean exactly as the server streamed
    it, so every party that received the same result chains the same digest.
    `payload_sha256`: that digest where the download already computed it over the very
    bytes `mean` was read from (clients.streams.DownloadedMean); hashed here otherwise.
    """
    result = AggregateResult.from_header(
        header, mean, layout, privacy=privacy, privacy_spent=privacy_spent
    )
    return Received(
        result,
        mode=mode,
        header=header,
        payload_sha256=mean_payload_digest(mean) if payload_sha256 is None else payload_sha256,
        cohort=cohort,
        values=values,
    )


def accept(received: Received, chain: ModelChain) -> AggregateResult:
    """Refuse an aggregate no honest cohort could produce (ImplausibleAggregateError,
    secagg.protocol.aggregate_bounds), then chain the result as received into the next
    round's model hash (secagg.protocol.model_chain)."""
    result, header = received.result, received.header
    check_cohort(received.cohort, result.survivors, result.total_weight)
    limits = received.values(len(result.survivors), result.total_weight)
    check_values(result.round_id, result.weighted_mean, limits)
    digest = result_digest(
        round_id=result.round_id,
        mode=received.mode,
        survivors=result.survivors,
        total_weight=int(header.total_weight) if header is not None else 0,
        error_bound=float(header.error_bound) if header is not None else 0.0,
        payload_sha256=received.payload_sha256,
    )
    chain.advance(result.round_id, digest)
    return replace(result, result_digest=digest)
