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

from proto import aggregation_pb2 as pb
from secagg.errors import (
    ConfigError,
    DuplicateSubmissionError,
    InvalidMessageError,
    ProtocolError,
    StageError,
    ThresholdNotMetError,
    UnknownClientError,
)
from secagg.protocol.messages import RoundResult
from secagg.protocol.stages import Stage
from secagg.protocol.upload import UploadProgress
from secagg.quantize import AggregateEstimate

if TYPE_CHECKING:
    from server.settings import RoundSettings

FLOAT_BYTES = 4


class FloatUploads:
    """Streamed float32 uploads added, weighted, into a float64 running sum."""

    def __init__(self, target: np.ndarray, dimension: int, chunk_bytes: int, clip: float) -> None:
        if chunk_bytes <= 0 or chunk_bytes % FLOAT_BYTES:
            raise ConfigError(f"chunk_bytes={chunk_bytes} must be a positive multiple of 4")
        self._target = target
        self.clip = clip
        self.chunk_bytes = chunk_bytes
        self.total_bytes = dimension * FLOAT_BYTES
        self.chunk_count = max(1, -(-self.total_bytes // chunk_bytes))
        self._open: dict[str, UploadProgress] = {}
        self.weights: dict[str, int] = {}

    def progress(self, client_id: str) -> UploadProgress | None:
        return self._open.get(client_id)

    def begin(self, client_id: str, total_bytes: int, weight: int) -> None:
        if total_bytes != self.total_bytes:
            raise InvalidMessageError(
                f"upload announces {total_bytes} bytes; this round expects {self.total_bytes} "
                f"(float32 values)"
            )
        if client_id not in self._open:
            self._open[client_id] = UploadProgress()
            self.weights[client_id] = weight

    def _values(self, index: int, data: bytes) -> tuple[slice, np.ndarray]:
        start = index * self.chunk_bytes // FLOAT_BYTES
        values = np.frombuffer(data, dtype="<f4").astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise InvalidMessageError(f"chunk {index} holds NaN or infinite values")
        return slice(start, start + values.shape[0]), np.clip(values, -self.clip, self.clip)

    def add_chunk(self, client_id: str, index: int, data: bytes) -> None:
        state = self._open.get(client_id)
        if state is None:
            raise ProtocolError(f"no upload in progress for {client_id!r}; start with chunk 0")
        if index != state.next_index or index >= self.chunk_count:
            raise InvalidMessageError(
                f"chunk {index} out of order: the server expects chunk {state.next_index} next"
            )
        last = index == self.chunk_count - 1
        expected = self.total_bytes - index * self.chunk_bytes if last else self.chunk_bytes
        if len(data) != expected:
            raise InvalidMessageError(f"chunk {index} has {len(data)} bytes; expected {expected}")
        span, values = self._values(index, data)
        self._target[span] += self.weights[client_id] * values
        state.hasher.update(data)
        state.received_bytes += len(data)
        state.next_index += 1

    def finish(self, client_id: str, digest: bytes) -> None:
        state = self._open.get(client_id)
        if state is None:
            raise ProtocolError(f"no upload in progress for {client_id!r}")
        if state.received_bytes != self.total_bytes:
            raise InvalidMessageError(
                f"upload ended after {state.received_bytes} of {self.total_bytes} bytes"
            )
        if digest != state.hasher.digest():
            raise InvalidMessageError("upload digest mismatch: re-send the upload")
        del self._open[client_id]

    def abort(self, client_id: str, chunks: Iterable[bytes]) -> None:
        state = self._open.pop(client_id, None)
        if state is None:
            return
        for index, data in enumerate(chunks):
            if index >= state.next_index:
                break
            span, values = self._values(index, data)
            self._target[span] -= self.weights[client_id] * values
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
        self.uploads.begin(client_id, total_bytes, weight)

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


def plaintext_spec(round_id: int, roster: tuple[str, ...], settings: RoundSettings) -> pb.RoundSpec:
    """The published spec of a plaintext round; `threshold` is its quorum."""
    chunk = max(FLOAT_BYTES, settings.chunk_bytes // FLOAT_BYTES * FLOAT_BYTES)
    quorum = settings.threshold if settings.threshold is not None else settings.min_cohort
    return pb.RoundSpec(
        round_id=round_id,
        mode=pb.AGGREGATION_MODE_PLAINTEXT,
        dimension=settings.dimension,
        quantization=pb.QuantizationSpec(clip=settings.clip, max_weight=settings.max_weight),
        threshold=quorum,
        min_cohort=settings.min_cohort,
        max_cohort=len(roster),
        roster=list(roster),
        model_hash=settings.model_hash,
        chunk_bytes=chunk,
        stage_timeout_s=settings.stage_timeout_s,
    )
