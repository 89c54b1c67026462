"""The plaintext baseline's RPC: one upload stream per client, in the clear.

Why a module of its own: the baseline shares the upload stream and the result download
with the protected modes but none of their stages, and keeping it apart keeps what the
server sees in the clear easy to find.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from fedveil.proto import aggregation_pb2 as pb
from fedveil.secagg.protocol.stages import Stage
from fedveil.server.active_round import ActiveRound, AnyRound
from fedveil.server.mode_refusal import plaintext_round
from fedveil.server.rpc_plumbing import RpcPlumbing
from fedveil.server.upload_stream import UploadStreams


class PlaintextHandlers:
    """UploadPlaintext, on the servicer's shared plumbing."""

    def __init__(self, calls: RpcPlumbing, streams: UploadStreams) -> None:
        self.calls = calls
        self.streams = streams

    async def upload_plaintext(
        self, request_iterator: AsyncIterator[pb.VectorChunk], context: grpc.aio.ServicerContext
    ) -> pb.UploadAck:
        async def work() -> pb.UploadAck:
            active, _, received = await self.streams.consume(
                request_iterator, context, self._take_chunk
            )
            await active.wait_closed(Stage.MASKED_INPUT)
            return pb.UploadAck(received_bytes=received)

        return await self.calls.guard(context, work())

    async def _take_chunk(self, active: ActiveRound, client_id: str, chunk: pb.VectorChunk) -> bool:
        """Store and add one chunk; True once the upload is complete."""
        coordinator = self.calls.coordinator
        journal = coordinator.journal
        plaintext_round(active.server)

        def apply(server: AnyRound) -> bool:
            plain = plaintext_round(server)
            plain.begin_upload(client_id, chunk.total_bytes, chunk.weight)
            plain.add_chunk(client_id, chunk.index, chunk.data)
            if chunk.index == 0:
                journal.record(
                    active.round_id, "plain-begin", client_id, str(chunk.weight).encode()
                )
            journal.record_chunk(active.round_id, client_id, chunk.index, chunk.data)
            return coordinator.uploads.finish_if_last(
                active, client_id, bytes(chunk.checksum), plain.finish_upload
            )

        _, done = await coordinator.submit(active.round_id, Stage.MASKED_INPUT, apply)
        return bool(done)
