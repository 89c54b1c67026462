"""The SecAgg+ stage RPCs of the servicer: advertise keys, share keys, masked input,
consistency check, unmask.

Why a module of its own: each stage is the same move (convert the message, submit it in
its stage, long-poll on the close, answer with the client's request for the next stage),
and the five of them with the masked-input stream are the whole SecAgg face of the
service; the CKKS and plaintext modes share none of these message shapes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from fedveil.proto import aggregation_pb2 as pb
from fedveil.proto import convert
from fedveil.secagg.protocol.messages import (
    ConsistencyRequest,
    MaskedInputRequest,
    ShareKeysRequest,
    UnmaskRequest,
)
from fedveil.secagg.protocol.stages import Stage
from fedveil.server.active_round import ActiveRound, AnyRound
from fedveil.server.mode_refusal import expect, secagg_round
from fedveil.server.rpc_plumbing import RpcPlumbing
from fedveil.server.upload_stream import UploadStreams


class SecAggHandlers:
    """The SecAgg stage RPCs, on the servicer's shared plumbing."""

    def __init__(self, calls: RpcPlumbing, streams: UploadStreams) -> None:
        self.calls = calls
        self.streams = streams

    async def advertise_keys(
        self, request: pb.AdvertiseKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.NeighbourKeys:
        advert = convert.advertisement_from_pb(request.advertisement)
        return await self.calls.stage_call(
            context,
            request.round_id,
            advert.client_id,
            Stage.ADVERTISE_KEYS,
            lambda cid: lambda server: secagg_round(server).receive(advert),
            message=advert,
            reply=lambda active, cid: convert.neighbour_keys_to_pb(
                expect(secagg_round(active.server).request_for(cid), ShareKeysRequest)
            ),
        )

    async def share_keys(
        self, request: pb.ShareKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.RelayedShares:
        response = convert.share_keys_from_pb(request)
        return await self.calls.stage_call(
            context,
            request.round_id,
            request.client_id,
            Stage.SHARE_KEYS,
            lambda cid: lambda server: secagg_round(server).receive(response),
            message=response,
            reply=lambda active, cid: convert.relayed_to_pb(
                expect(secagg_round(active.server).request_for(cid), MaskedInputRequest)
            ),
        )

    async def confirm_survivors(
        self, request: pb.ConfirmSurvivorsRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnmaskInstructions:
        signature = convert.signature_from_pb(request.signature)
        return await self.calls.stage_call(
            context,
            request.round_id,
            signature.client_id,
            Stage.CONSISTENCY_CHECK,
            lambda cid: lambda server: secagg_round(server).receive(signature),
            message=signature,
            reply=lambda active, cid: convert.instructions_to_pb(
                expect(secagg_round(active.server).request_for(cid), UnmaskRequest)
            ),
        )

    async def unmask(
        self, request: pb.UnmaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnmaskAck:
        response = convert.unmask_from_pb(request)
        return await self.calls.stage_call(
            context,
            request.round_id,
            request.client_id,
            Stage.UNMASK,
            lambda cid: lambda server: secagg_round(server).receive(response),
            message=response,
            reply=lambda active, cid: pb.UnmaskAck(stage=convert.STAGE_TO_PB[active.server.stage]),
        )

    async def upload_masked_input(
        self, request_iterator: AsyncIterator[pb.VectorChunk], context: grpc.aio.ServicerContext
    ) -> pb.SurvivorSet:
        async def work() -> pb.SurvivorSet:
            active, client_id, _ = await self.streams.consume(
                request_iterator, context, self._take_chunk
            )
            await active.wait_closed(Stage.MASKED_INPUT)
            async with self.calls.coordinator.lock:
                return convert.survivors_to_pb(
                    expect(secagg_round(active.server).request_for(client_id), ConsistencyRequest)
                )

        return await self.calls.guard(context, work())

    async def _take_chunk(self, active: ActiveRound, client_id: str, chunk: pb.VectorChunk) -> bool:
        """Store and add one chunk; True once the upload is complete."""
        coordinator = self.calls.coordinator
        uploads = secagg_round(active.server).uploads
        journal = coordinator.journal

        if chunk.index == uploads.chunk_count and not chunk.data:
            return await coordinator.uploads.rejoin_complete(active, client_id)

        def apply(server: AnyRound) -> bool:
            round_server = secagg_round(active.server)
            del server  # the same object; the closure names it explicitly
            round_server.begin_masked_input(client_id, chunk.total_bytes)
            round_server.add_masked_chunk(client_id, chunk.index, chunk.data)
            journal.record_chunk(active.round_id, client_id, chunk.index, chunk.data)
            return coordinator.uploads.finish_if_last(
                active, client_id, bytes(chunk.checksum), round_server.finish_masked_input
            )

        _, done = await coordinator.submit(active.round_id, Stage.MASKED_INPUT, apply)
        return bool(done)
