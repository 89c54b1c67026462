"""The plaintext driver: the unprotected baseline, the update streamed in the clear.

Why it exists: it is what FedAvg without protection does, the same-transport reference
that SecAgg's cost is measured against (benchmarks/e2e_bench.py). A client takes part
only when its policy opts in (clients.mode_policy), and it says so in the log each time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

from fedveil.clients.calls import RetryPolicy, call_unary, fetch_result
from fedveil.clients.result import AggregateResult, Received
from fedveil.clients.round_call import RoundCall
from fedveil.clients.streams import ChunkedPayload, TensorLayout
from fedveil.proto import aggregation_pb2 as pb
from fedveil.secagg.modes import AggregationMode
from fedveil.secagg.protocol.aggregate_bounds import CohortLimits, bounded_value_limits
from fedveil.secagg.protocol.model_chain import mean_payload_digest

logger = logging.getLogger("fedveil.clients.transport")


class PlaintextDriver:
    """Runs plaintext rounds: upload the weighted update, then fetch the mean."""

    mode: AggregationMode = AggregationMode.PLAINTEXT
    adds_dp_noise = False

    async def run(
        self, call: RoundCall, update: np.ndarray, weight: int, layout: TensorLayout | None
    ) -> Received:
        spec = call.spec
        header, mean = await self._exchange(call, update, weight)
        result = AggregateResult.from_header(header, mean, layout)
        clip, dimension = float(spec.quantization.clip), int(spec.dimension)
        return Received(
            result,
            mode=self.mode,
            header=header,
            payload_sha256=mean_payload_digest(mean),
            cohort=CohortLimits(
                result.round_id,
                call.client_id,
                frozenset(spec.roster),
                int(spec.threshold),
                int(spec.quantization.max_weight),
                own_weight=weight,
            ),
            values=lambda n, w: bounded_value_limits(clip, dimension, 0.0),
        )

    async def _exchange(
        self, call: RoundCall, update: np.ndarray, weight: int
    ) -> tuple[pb.ResultHeader, np.ndarray]:
        """Stream the update in the clear, then fetch the mean."""
        spec = call.spec
        logger.warning(
            "round %d is a PLAINTEXT round: the server sees this client's update", spec.round_id
        )
        payload = ChunkedPayload(
            int(spec.round_id),
            call.client_id,
            np.ascontiguousarray(update, dtype="<f4").tobytes(),
            int(spec.chunk_bytes),
        )
        stub = call.stub

        def with_weight() -> Iterator[pb.VectorChunk]:
            for chunk in payload.chunks():
                chunk.weight = weight
                yield chunk

        timeout = call.stage_timeout_s
        await call_unary(
            lambda request, timeout: stub.UploadPlaintext(with_weight(), timeout=timeout),
            None,
            rpc="UploadPlaintext",
            retry=RetryPolicy(attempts=1),
            timeout_s=timeout,
        )
        request = pb.GetResultRequest(round_id=spec.round_id, client_id=call.client_id)
        return await fetch_result(
            stub,
            request,
            expected_dimension=int(spec.dimension),
            retry=call.retry,
            timeout_s=timeout,
        )
