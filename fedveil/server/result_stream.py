"""GetResult: a released round's result streamed in chunks, the header on the first one
and the SHA-256 of the whole on the last.

Why a module of its own: the download is the same for every mode except what the header
says about the sum (the weight and error bound of a mean; the key fingerprint of a CKKS
sum), and it is the one RPC that streams out, so it aborts before its first chunk rather
than through the shared guard.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from fedveil.errors import FedveilError
from fedveil.proto import aggregation_pb2 as pb
from fedveil.proto import convert
from fedveil.secagg.ckks.messages import CkksResult
from fedveil.secagg.ckks.server_round import CkksServerRound
from fedveil.server.active_round import ActiveRound
from fedveil.server.errors import RoundFailedError, abort_with
from fedveil.server.rpc_plumbing import RpcPlumbing


class ResultStream:
    """Streams a round's result to a client and records that it fetched it."""

    def __init__(self, calls: RpcPlumbing) -> None:
        self.calls = calls

    async def get_result(
        self, request: pb.GetResultRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ResultChunk]:
        coordinator = self.calls.coordinator
        try:
            self.calls.caller(context, request.client_id)
            active = coordinator.get(request.round_id)
            result = active.server.result
            if result is None:
                raise RoundFailedError(
                    f"round {request.round_id} has no result (stage {active.server.stage.value}"
                    + (f": {active.server.failure}" if active.server.failure else "")
                    + ")"
                )
        except FedveilError as exc:
            await abort_with(context, exc)
            return
        pieces, digest = active.serialised_result(int(active.spec.chunk_bytes))
        header = pb.ResultHeader(
            round_id=request.round_id,
            survivors=list(result.survivors),
            dimension=int(active.spec.dimension),
            total_bytes=sum(len(piece) for piece in pieces),
            mode=active.spec.mode,
            chunk_count=len(pieces),
        )
        if isinstance(result, CkksResult):
            header.key_fingerprint = active.spec.ckks.key_fingerprint or _fingerprint(active)
        else:
            header.total_weight = result.estimate.total_weight
            header.error_bound = result.estimate.error_bound
        if active.privacy is not None:
            header.privacy.CopyFrom(convert.privacy_to_pb(active.privacy))
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            yield pb.ResultChunk(
                header=header if index == 0 else None,
                index=index,
                data=piece,
                sha256=digest if last else b"",
            )
        coordinator.downloads.record(request.round_id, request.client_id)


def _fingerprint(active: ActiveRound) -> bytes:
    """The key a CKKS round's sum is under (its own, in the round that made the key)."""
    server = active.server
    assert isinstance(server, CkksServerRound) and server.epoch is not None
    return server.epoch.fingerprint
