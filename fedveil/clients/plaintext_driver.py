"""The plaintext driver: the unprotected baseline, the update streamed in the clear.

Why it exists: it is what FedAvg without protection does, the same-transport reference
that SecAgg's cost is measured against (benchmarks/e2e_bench.py). A client takes part
only when its policy opts in (clients.mode_policy), and it says so in the log each time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np

from fedveil.clients.calls import RetryPolicy, call_unary, fetch_result
from fedveil.clients.result import Received, mean_received
from fedveil.clients.round_call import RoundCall
from fedveil.clients.streams import ChunkedPayload, DownloadedMean, TensorLayout
from fedveil.proto import aggregation_pb2 as pb
from fedveil.secagg.modes import AggregationMode
from fedveil.secagg.protocol.aggregate_bounds import (
    CohortLimits,
    ValueLimits,
    bounded_value_limits,
)

logger = logging.getLogger("fedveil.clients.transport")


class PlaintextDriver:
    """Runs plaintext rounds: upload the weighted update, then fetch the mean."""

    mode: AggregationMode = AggregationMode.PLAINTEXT
    adds_dp_noise = False

    async def run(
        self, call: RoundCall, update: np.ndarray, weight: int, layout: TensorLayout | None
    ) -> Received:
        spec = call.spec
        header, mean, payload_sha256 = await self._exchange(call, update, weight)
        cohort, values = plaintext_limits(spec, call.client_id, own_weight=weight)
        return mean_received(
            header,
            mean,
            layout,
            mode=self.mode,
            cohort=cohort,
            values=values,
            payload_sha256=payload_sha256,
        )

    async def _exchange(self, call: RoundCall, update: np.ndarray, weight: int) -> DownloadedMean:
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


def plaintext_limits(
    spec: pb.RoundSpec, client_id: str, *, own_weight: int | None, round_id: int | None = None
) -> tuple[CohortLimits, Callable[[int, int], ValueLimits]]:
    """What an honest plaintext round of `spec` can produce: survivors on the roster and
    at least its threshold, values within the clip (secagg.protocol.aggregate_bounds).

    `own_weight` is None for a party that did not take part (clients.catch_up);
    `round_id` names the round in refusals (default: `spec`'s).
    """
    clip, dimension = float(spec.quantization.clip), int(spec.dimension)
    cohort = CohortLimits(
        int(spec.round_id) if round_id is None else round_id,
        client_id,
        frozenset(spec.roster),
        int(spec.threshold),
        int(spec.quantization.max_weight),
        own_weight=own_weight,
    )
    return cohort, lambda n, w: bounded_value_limits(clip, dimension, 0.0)
