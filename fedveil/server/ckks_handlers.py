"""The CKKS-mode RPCs of the servicer: key advertisement, publication, fetch, upload.

Why a module of its own: CKKS rounds share the servicer's plumbing (caller identity from
mutual TLS, the coordinator's long polls, error-to-status mapping, chunked streams) but
none of SecAgg's message shapes, so they live next to each other without growing one
file past reading. The server only ever handles public material here: signed X25519
keys, the public context, sealed blobs it cannot open, and ciphertexts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from fedveil.errors import StageError
from fedveil.proto import aggregation_pb2 as pb
from fedveil.proto import convert_ckks
from fedveil.secagg.ckks.server_round import CkksServerRound
from fedveil.secagg.protocol.stages import Stage
from fedveil.server.active_round import ActiveRound, AnyRound
from fedveil.server.mode_refusal import ckks_round
from fedveil.server.rpc_plumbing import RpcPlumbing
from fedveil.server.upload_stream import UploadStreams


class CkksHandlers:
    """The CKKS RPCs, on the servicer's shared plumbing."""

    def __init__(self, calls: RpcPlumbing, streams: UploadStreams) -> None:
        self.calls = calls
        self.streams = streams

    async def advertise_keys(
        self, request: pb.AdvertiseKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.NeighbourKeys:
        advert = convert_ckks.advertisement_from_pb(request.advertisement)
        return await self.calls.stage_call(
            context,
            request.round_id,
            advert.client_id,
            Stage.ADVERTISE_KEYS,
            lambda cid: lambda server: ckks_round(server).receive_advertisement(advert),
            message=advert,
            kind=CkksServerRound,
            reply=lambda active, cid: pb.NeighbourKeys(
                advertisements=[
                    convert_ckks.advertisement_to_pb(a)
                    for a in ckks_round(active.server).advertisements_for(cid)
                ]
            ),
        )

    async def publish_keys(
        self, request: pb.CkksKeyPublication, context: grpc.aio.ServicerContext
    ) -> pb.CkksPublicationAck:
        publication = convert_ckks.publication_from_pb(request)
        return await self.calls.stage_call(
            context,
            request.round_id,
            publication.client_id,
            Stage.SHARE_KEYS,
            lambda cid: lambda server: ckks_round(server).publish(publication),
            message=publication,
            kind=CkksServerRound,
            reply=lambda active, cid: pb.CkksPublicationAck(
                key_fingerprint=publication.fingerprint
            ),
        )

    async def fetch_keys(
        self, request: pb.FetchCkksKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.CkksKeyDelivery:
        async def work() -> pb.CkksKeyDelivery:
            coordinator = self.calls.coordinator
            client_id = self.calls.caller(context, request.client_id)
            active = coordinator.get(request.round_id)
            server = ckks_round(active.server)
            if not server.config.distributes_keys:
                raise StageError(
                    f"round {request.round_id} reuses the keys of epoch {server.config.key_epoch}"
                    "; they were handed out in that epoch's first round"
                )
            await active.wait_closed(Stage.SHARE_KEYS)
            async with coordinator.lock:
                return convert_ckks.delivery_to_pb(server.delivery_for(client_id))

        return await self.calls.guard(context, work())

    async def upload_ciphertext(
        self, request_iterator: AsyncIterator[pb.VectorChunk], context: grpc.aio.ServicerContext
    ) -> pb.UploadAck:
        async def work() -> pb.UploadAck:
            active, _, received = await self.streams.consume(
                request_iterator, context, self._take_ciphertext
            )
            await active.wait_closed(Stage.MASKED_INPUT)
            return pb.UploadAck(received_bytes=received)

        return await self.calls.guard(context, work())

    async def _take_ciphertext(
        self, active: ActiveRound, client_id: str, chunk: pb.VectorChunk
    ) -> bool:
        """Parse and add one ciphertext; True once the upload is complete."""
        coordinator = self.calls.coordinator
        journal = coordinator.journal
        server = ckks_round(active.server)
        if chunk.index == server.config.chunk_count and not chunk.data:
            return await coordinator.uploads.rejoin_complete(active, client_id)

        def apply(round_server: AnyRound) -> bool:
            del round_server  # the same object as `server`
            server.begin_upload(client_id, chunk.total_bytes, bytes(chunk.key_fingerprint))
            server.add_chunk(client_id, chunk.index, chunk.data)
            if chunk.index == 0:
                journal.record(
                    active.round_id, "ckks-begin", client_id, str(chunk.total_bytes).encode()
                )
            journal.record_chunk(active.round_id, client_id, chunk.index, chunk.data)
            return coordinator.uploads.finish_if_last(
                active, client_id, bytes(chunk.checksum), server.finish_upload
            )

        _, done = await coordinator.submit(active.round_id, Stage.MASKED_INPUT, apply)
        return bool(done)
