"""The plaintext baseline round: the server sees every update in the clear.

Why it exists: it is what FedAvg without protection does, so it is the same-transport
reference that SecAgg's cost is measured against (benchmarks/e2e_bench.py), and the
"none" cell of the audit. It reuses the streamed-upload rules of the secure path
(in-order chunks of whole float32 values, a digest per stream, rollback of an abandoned
upload) and the same round lifecycle, so the two modes differ only in the protection.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from fedveil.errors import (
    ConfigError,
    DuplicateSubmissionError,
    InvalidMessageError,
    StageError,
    ThresholdNotMetError,
    UnknownClientError,
)
from fedveil.proto import aggregation_pb2 as pb
from fedveil.proto.convert import mode_to_wire
from fedveil.secagg.modes import AggregationMode
from fedveil.secagg.protocol.messages import RoundResult
from fedveil.secagg.protocol.stages import Stage
from fedveil.secagg.protocol.upload import ChunkedUploads
from fedveil.secagg.quantize import AggregateEstimate

if TYPE_CHECKING:
    from fedveil.server.settings import RoundSettings

FLOAT_BYTES = 4


class FloatUploads(ChunkedUploads):
    """Streamed float32 uploads, clipped and weighted, into a float64 running sum."""

    def __init__(self, target: np.ndarray, dimension: int, chunk_bytes: int, clip: float) -> None:
        if chunk_bytes <= 0 or chunk_bytes % FLOAT_BYTES:
            raise ConfigError(f"chunk_bytes={chunk_bytes} must be a positive multiple of 4")
        super().__init__(dimension * FLOAT_BYTES, chunk_bytes, "float32 values")
        self._target = target
        self.clip = clip
        self.weights: dict[str, int] = {}

    def begin_weighted(self, client_id: str, total_bytes: int, weight: int) -> None:
        self.begin(client_id, total_bytes)
        self.weights.setdefault(client_id, weight)

    def _apply(self, client_id: str, index: int, data: bytes, *, subtract: bool) -> None:
        start = index * self.chunk_bytes // FLOAT_BYTES
        values = np.frombuffer(data, dtype="<f4").astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise InvalidMessageError(f"chunk {index} holds NaN or infinite values")
        contribution = self.weights[client_id] * np.clip(values, -self.clip, self.clip)
        span = slice(start, start + values.shape[0])
        if subtract:
            self._target[span] -= contribution
        else:
            self._target[span] += contribution

    def abort(self, client_id: str, chunks: Iterable[bytes]) -> None:
        super().abort(client_id, chunks)
        self.weights.pop(client_id, None)


class PlaintextRound:
    """Collect plain updates until every enrolled client sent one or the deadline passes."""

    def __init__(
        self,
        round_id: int,
        roster: Iterable[str],
        dimension: int,
        *,
        quorum: int,
        max_weight: int,
        chunk_bytes: int,
        clip: float,
    ) -> None:
        self.round_id = round_id
        self.roster = frozenset(roster)
        self.dimension = dimension
        self.quorum = quorum
        self.max_weight = max_weight
        self.stage = Stage.MASKED_INPUT
        self.failure: Exception | None = None
        self.failed_at: Stage | None = None
        self.result: RoundResult | None = None
        self._sum = np.zeros(dimension, dtype=np.float64)
        self.uploads = FloatUploads(self._sum, dimension, chunk_bytes, clip)
        self._uploaded: set[str] = set()

    @property
    def uploaded(self) -> frozenset[str]:
        return frozenset(self._uploaded)

    def expected_senders(self) -> frozenset[str]:
        return self.roster - self._uploaded if self.stage is Stage.MASKED_INPUT else frozenset()

    def stage_complete(self) -> bool:
        """`not expected_senders()` in O(1): uploads are checked to come from the roster."""
        return self.stage is not Stage.MASKED_INPUT or len(self._uploaded) >= len(self.roster)

    def uploads_in_flight(self) -> frozenset[str]:
        return frozenset(c for c in self.roster if self.uploads.progress(c) is not None)

    def is_resend(self, message: object) -> bool:
        return False

    def already_submitted(self, message: object) -> bool:
        return False

    def _require_collecting(self, client_id: str) -> None:
        if self.stage is not Stage.MASKED_INPUT:
            raise StageError(f"round {self.round_id} is no longer collecting uploads")
        if client_id not in self.roster:
            raise UnknownClientError(f"{client_id!r} is not on this round's roster")
        if client_id in self._uploaded:
            raise DuplicateSubmissionError(f"{client_id!r} already uploaded in this round")

    def begin_upload(self, client_id: str, total_bytes: int, weight: int) -> None:
        self._require_collecting(client_id)
        if not 1 <= weight <= self.max_weight:
            raise InvalidMessageError(f"weight must be in [1, {self.max_weight}], got {weight}")
        self.uploads.begin_weighted(client_id, total_bytes, weight)

    def add_chunk(self, client_id: str, index: int, data: bytes) -> None:
        self._require_collecting(client_id)
        self.uploads.add_chunk(client_id, index, data)

    def finish_upload(self, client_id: str, digest: bytes) -> None:
        self._require_collecting(client_id)
        self.uploads.finish(client_id, digest)
        self._uploaded.add(client_id)

    def abort_masked_input(self, client_id: str, chunks: Iterable[bytes]) -> None:
        self.uploads.abort(client_id, chunks)

    def advance(self) -> Stage:
        if self.stage is not Stage.MASKED_INPUT:
            raise StageError(f"the round is already {self.stage.value}")
        if len(self._uploaded) < self.quorum:
            self.failure = ThresholdNotMetError(
                f"round {self.round_id}: only {len(self._uploaded)} plain uploads, "
                f"quorum is {self.quorum}"
            )
            self.failed_at, self.stage = self.stage, Stage.FAILED
            raise self.failure
        total = sum(self.uploads.weights[c] for c in self._uploaded)
        estimate = AggregateEstimate(self._sum, total, self._sum / total, 0.0)
        self.result = RoundResult(tuple(sorted(self._uploaded)), np.zeros(0), estimate)
        self.stage = Stage.DONE
        return self.stage


def plaintext_spec(
    round_id: int, roster: tuple[str, ...], settings: RoundSettings, model_hash: bytes
) -> pb.RoundSpec:
    """The published spec of a plaintext round; `threshold` is its quorum, `model_hash`
    the round's chained model hash (secagg.protocol.model_chain)."""
    chunk = max(FLOAT_BYTES, settings.chunk_bytes // FLOAT_BYTES * FLOAT_BYTES)
    quorum = settings.threshold if settings.threshold is not None else settings.min_cohort
    return pb.RoundSpec(
        round_id=round_id,
        mode=mode_to_wire(AggregationMode.PLAINTEXT),
        dimension=settings.dimension,
        quantization=pb.QuantizationSpec(clip=settings.clip, max_weight=settings.max_weight),
        threshold=quorum,
        min_cohort=settings.min_cohort,
        max_cohort=len(roster),
        roster=list(roster),
        model_hash=model_hash,
        chunk_bytes=chunk,
        stage_timeout_s=settings.stage_timeout_s,
    )
