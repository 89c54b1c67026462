"""The chunked upload streams of every mode, as the RPC handlers read them: one stream
fed chunk by chunk to the mode's own `take`, and where a broken upload resumes.

Why apart from the mode handlers: SecAgg's masked input, the plaintext baseline and CKKS
ciphertexts all arrive as the same VectorChunk stream with the same rules (one caller and
one round per stream, the checksum on the last chunk, resume from GetUploadStatus); only
what a chunk does to the round differs, and that is the handler's `take`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from fedveil.errors import InvalidMessageError, StageError
from fedveil.proto import aggregation_pb2 as pb
from fedveil.server.active_round import ActiveRound
from fedveil.server.rpc_plumbing import RpcPlumbing

TakeChunk = Callable[[ActiveRound, str, pb.VectorChunk], Awaitable[bool]]
"""Store and add one chunk of `client_id`'s upload; True once the upload is complete."""


class UploadStreams:
    """Consumes upload streams and reports an upload's progress (GetUploadStatus)."""

    def __init__(self, calls: RpcPlumbing) -> None:
        self.calls = calls

    async def consume(
        self,
        request_iterator: AsyncIterator[pb.VectorChunk],
        context: grpc.aio.ServicerContext,
        take: TakeChunk,
    ) -> tuple[ActiveRound, str, int]:
        """Feed a chunk stream to `take` until it reports the upload complete.

        Every chunk must name the caller and one round; a stream that ends before the
        upload is complete is refused (INVALID_ARGUMENT, resume from GetUploadStatus).
        Returns the round, the caller and the bytes received in this stream.
        """
        active: ActiveRound | None = None
        client_id, received, complete, last = "", 0, False, -1
        async for chunk in request_iterator:
            if active is None:
                client_id = self.calls.caller(context, chunk.client_id)
                active = self.calls.coordinator.get(chunk.round_id)
            elif chunk.client_id != client_id or chunk.round_id != active.round_id:
                raise InvalidMessageError(
                    "every chunk of one upload must name the same round and client"
                )
            received += len(chunk.data)
            last = chunk.index
            if await take(active, client_id, chunk):
                complete = True
                break
        if active is None:
            raise InvalidMessageError("empty upload stream: send at least one chunk")
        if not complete:
            # Not a long poll on an upload that cannot finish: the chunks are kept, and
            # the client resumes (the stream of an honest client only ends after the
            # last chunk, which carries the checksum).
            raise InvalidMessageError(
                f"the upload stream ended after chunk {last}, before the last chunk (the "
                "one that carries the checksum); the chunks received are kept: resume from "
                "GetUploadStatus's next_index"
            )
        return active, client_id, received

    async def status(
        self, request: pb.UploadStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.UploadStatus:
        """Where the caller's upload resumes, or that it is complete."""

        async def work() -> pb.UploadStatus:
            coordinator = self.calls.coordinator
            client_id = self.calls.caller(context, request.client_id)
            active = coordinator.get(request.round_id)
            async with coordinator.lock:
                uploads = active.server.uploads
                if uploads is None:
                    raise StageError(f"round {request.round_id} is not collecting uploads yet")
                progress = uploads.progress(client_id)
                if client_id in active.server.uploaded:
                    return pb.UploadStatus(next_index=uploads.chunk_count, complete=True)
                return pb.UploadStatus(
                    next_index=progress.next_index if progress else 0, complete=False
                )

        return await self.calls.guard(context, work())
