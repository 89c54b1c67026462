"""One open round as the service holds it: the state machine, its published spec, the
events its long-polling clients sleep on (and whether a message fits the stage), and its
result as clients download it.

Why apart from the coordinator: the servicer, the CKKS handlers and the per-mode round
openers all hold an ActiveRound, but only the coordinator decides when its stages close.
The serialised result is cached here so n concurrent downloads share one copy.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from fedveil.errors import StageError
from fedveil.proto import aggregation_pb2 as pb
from fedveil.proto.convert import mode_from_wire
from fedveil.secagg.ckks.messages import CkksResult
from fedveil.secagg.ckks.server_round import CkksServerRound
from fedveil.secagg.dp.report import RoundPrivacyReport
from fedveil.secagg.modes import parse_mode
from fedveil.secagg.protocol.model_chain import RESULT_DTYPE, payload_digest, result_digest
from fedveil.secagg.protocol.server import ServerRound
from fedveil.secagg.protocol.stages import ORDER, Stage
from fedveil.server.errors import RoundFailedError, StageClosedError
from fedveil.server.plaintext import PlaintextRound

AnyRound = ServerRound | PlaintextRound | CkksServerRound


@dataclass
class ActiveRound:
    """One round and the events its waiting clients sleep on."""

    server: AnyRound
    spec: pb.RoundSpec
    closed: dict[Stage, asyncio.Event] = field(
        default_factory=lambda: {stage: asyncio.Event() for stage in ORDER}
    )
    deadline: asyncio.Task[None] | None = None
    result_pieces: list[bytes] | None = None
    result_digest: bytes = b""
    noise_seed: bytes | None = None  # central DP: keys the server's noise (journalled)
    privacy: RoundPrivacyReport | None = None  # DP rounds, once the result is released
    # When the current stage opened (Unix seconds, and the event loop's clock for its
    # duration) and whom it waited for then: what `fedveil status` and the metrics read.
    stage_opened_at: float = 0.0
    stage_opened_clock: float = 0.0
    stage_expected: frozenset[str] = frozenset()

    def serialised_result(self, chunk_bytes: int) -> tuple[list[bytes], bytes]:
        """The result as download chunks and the SHA-256 of their concatenation.

        SecAgg and plaintext: the float64 weighted mean cut into `chunk_bytes` pieces;
        CKKS: the summed ciphertexts, one per piece. Computed once per round, so n
        concurrent downloads share one copy instead of holding n.
        """
        if self.result_pieces is None:
            result = self.server.result
            assert result is not None
            if isinstance(result, CkksResult):
                pieces = list(result.ciphertexts)
            else:
                data = np.ascontiguousarray(
                    result.estimate.weighted_mean, dtype=RESULT_DTYPE
                ).tobytes()
                view = memoryview(data)
                count = max(1, -(-len(data) // chunk_bytes))
                pieces = [
                    bytes(view[i * chunk_bytes : (i + 1) * chunk_bytes]) for i in range(count)
                ]
            self.result_pieces, self.result_digest = pieces, payload_digest(pieces)
        return self.result_pieces, self.result_digest

    def published_digest(self) -> bytes:
        """The digest of the result as every client downloads it (the header's round id,
        mode, survivors, total weight and error bound, and the SHA-256 of the chunks):
        the next round's model hash chains it (secagg.protocol.model_chain)."""
        result = self.server.result
        assert result is not None
        _, payload = self.serialised_result(int(self.spec.chunk_bytes))
        weight, bound = 0, 0.0
        if not isinstance(result, CkksResult):
            weight, bound = int(result.estimate.total_weight), float(result.estimate.error_bound)
        return result_digest(
            round_id=self.round_id,
            mode=parse_mode(mode_from_wire(self.spec.mode), "the round spec's mode"),
            survivors=result.survivors,
            total_weight=weight,
            error_bound=bound,
            payload_sha256=payload,
        )

    @property
    def round_id(self) -> int:
        return int(self.spec.round_id)

    def check_stage(self, stage: Stage) -> None:
        """Raise the specific error for a message that does not fit the round's stage."""
        current = self.server.stage
        if current is stage:
            return
        if current is Stage.FAILED:
            raise RoundFailedError(f"round {self.round_id} failed: {self.server.failure}")
        if ORDER.index(current) > ORDER.index(stage):
            raise StageClosedError(
                f"stage {stage.value} of round {self.round_id} is closed (the round is at "
                f"{current.value}); this client is out of the round — join the next one"
            )
        raise StageError(
            f"round {self.round_id} is at stage {current.value}; {stage.value} is not open yet"
        )

    async def wait_closed(self, stage: Stage) -> None:
        """Sleep until `stage` closes; raise if the round failed."""
        await self.closed[stage].wait()
        if self.server.stage is Stage.FAILED:
            raise RoundFailedError(
                f"round {self.round_id} failed at stage "
                f"{self.server.failed_at.value if self.server.failed_at else '?'}: "
                f"{self.server.failure}"
            )
