"""GetResult: a released round's result streamed in chunks, the header on the first one
and the SHA-256 of the whole on the last.

Why a module of its own: the download is the same for every mode except what the header
says about the sum (the weight and error bound of a mean; the key fingerprint of a CKKS
sum), and it is the one RPC that streams out, so it aborts before its first chunk rather
than through the shared guard. Where the result comes from (memory, or the journal once
the round left memory) is server.stored_results' business: the stream is the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from fedveil.errors import FedveilError
from fedveil.proto import aggregation_pb2 as pb
from fedveil.server.errors import abort_with
from fedveil.server.rpc_plumbing import RpcPlumbing
from fedveil.server.stored_results import served_result


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
            served = served_result(coordinator, request.round_id)
        except FedveilError as exc:
            await abort_with(context, exc)
            return
        header = served.header
        last = int(header.chunk_count) - 1
        for index, piece in enumerate(served.pieces):
            yield pb.ResultChunk(
                header=header if index == 0 else None,
                index=index,
                data=piece,
                sha256=served.sha256 if index == last else b"",
            )
        coordinator.downloads.record(request.round_id, request.client_id)
