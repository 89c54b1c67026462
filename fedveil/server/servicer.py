"""The fedveil.v1.Aggregation servicer: protobuf in, coordinator call, protobuf out.

Why it holds no logic of its own: authentication comes from the roster, validation from
the state machine, timing from the coordinator. Each handler names the caller (from its
mutual-TLS certificate), checks the message claims the same identity, converts, and maps
any FedveilError to its gRPC status with a message that says what to fix.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc

from fedveil.errors import FedveilError, InvalidMessageError, StageError, UnknownClientError
from fedveil.proto import aggregation_pb2 as pb
from fedveil.proto import aggregation_pb2_grpc as pb_grpc
from fedveil.proto import convert
from fedveil.secagg.ckks.messages import CkksResult
from fedveil.secagg.ckks.server_round import CkksServerRound
from fedveil.secagg.protocol.messages import (
    ConsistencyRequest,
    MaskedInputRequest,
    ShareKeysRequest,
    UnmaskRequest,
)
from fedveil.secagg.protocol.server import ServerRound
from fedveil.secagg.protocol.stages import Stage
from fedveil.server.active_round import ActiveRound
from fedveil.server.ckks_handlers import CkksHandlers
from fedveil.server.coordinator import RoundCoordinator
from fedveil.server.errors import RoundFailedError, abort_with
from fedveil.server.plaintext import PlaintextRound
from fedveil.server.roster import Roster

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


_HOW_TO = {
    PlaintextRound: "this round runs in plaintext mode: use UploadPlaintext, then GetResult",
    CkksServerRound: (
        "this round runs in ckks mode: use AdvertiseKeys, FetchCkksKeys (or PublishCkksKeys "
        "as the key holder), UploadCiphertext, then GetResult"
    ),
    ServerRound: "this round runs in secagg mode: use the SecAgg stage RPCs",
}


def _secagg(server: object) -> ServerRound:
    """The round as a SecAgg round; a SecAgg stage RPC on another mode's round is refused."""
    if not isinstance(server, ServerRound):
        raise StageError(_HOW_TO[type(server)])
    return server


def _plain(server: object) -> PlaintextRound:
    if not isinstance(server, PlaintextRound):
        raise StageError(_HOW_TO[type(server)])
    return server


def _expect(request: object, kind: type[R]) -> R:
    """The state machine's request for the stage just opened, with its static type."""
    if not isinstance(request, kind):
        raise TypeError(f"expected {kind.__name__}, the round produced {type(request).__name__}")
    return request


class AggregationServicer(CkksHandlers, pb_grpc.AggregationServicer):
    def __init__(self, coordinator: RoundCoordinator, roster: Roster, *, insecure: bool) -> None:
        self.coordinator = coordinator
        self.roster = roster
        self.insecure = insecure

    # --- plumbing -----------------------------------------------------------------------

    def _caller(self, context: grpc.aio.ServicerContext, claimed: str) -> str:
        """The authenticated client id; the message must claim the same one."""
        if self.insecure:
            if claimed not in self.roster:
                raise UnknownClientError(f"{claimed!r} is not enrolled on this server's roster")
            return claimed
        enrolled = self.roster.authorize_peer(context.auth_context())
        if claimed != enrolled.client_id:
            raise UnknownClientError(
                f"the message names client {claimed!r} but your certificate is "
                f"{enrolled.client_id!r}; a client may only speak for itself"
            )
        return enrolled.client_id

    async def _guard(self, context: grpc.aio.ServicerContext, work: Awaitable[T]) -> T:
        try:
            return await work
        except FedveilError as exc:
            await abort_with(context, exc)
            raise  # unreachable: abort raises

    async def _stage_call(
        self,
        context: grpc.aio.ServicerContext,
        round_id: int,
        claimed: str,
        stage: Stage,
        submit: Callable[[str], Callable[..., object]],
        reply: Callable[[ActiveRound, str], T],
        message: object,
        kind: type = ServerRound,
    ) -> T:
        async def work() -> T:
            client_id = self._caller(context, claimed)
            active = self.coordinator.rounds.get(round_id)
            if active is not None and not isinstance(active.server, kind):
                # the mode is named before the stage: "not open yet" would mislead
                raise StageError(_HOW_TO[type(active.server)])
            active, _ = await self.coordinator.submit(
                round_id, stage, submit(client_id), message=message
            )
            await active.wait_closed(stage)
            async with self.coordinator.lock:
                return reply(active, client_id)

        return await self._guard(context, work())

    def _round_or_none(self, round_id: int) -> object:
        """The round's state machine, or None (the stage call then names the error)."""
        active = self.coordinator.rounds.get(round_id)
        return active.server if active is not None else None

    # --- discovery ----------------------------------------------------------------------

    async def GetRound(
        self, request: pb.GetRoundRequest, context: grpc.aio.ServicerContext
    ) -> pb.RoundInfo:  # noqa: N802
        async def work() -> pb.RoundInfo:
            self._caller(context, request.client_id)
            active = self.coordinator.current
            if active is None:
                raise RoundFailedError("no round is open on this server (all rounds have run)")
            stage = convert.STAGE_TO_PB[active.server.stage]
            collects = isinstance(active.server, PlaintextRound | CkksServerRound)
            if collects and active.server.stage is Stage.MASKED_INPUT:
                stage = pb.ROUND_STAGE_COLLECT
            if isinstance(active.server, CkksServerRound) and active.server.stage is (
                Stage.SHARE_KEYS
            ):
                stage = pb.ROUND_STAGE_DISTRIBUTE_KEYS
            return pb.RoundInfo(spec=active.spec, stage=stage)

        return await self._guard(context, work())

    # --- stages -------------------------------------------------------------------------

    async def AdvertiseKeys(
        self, request: pb.AdvertiseKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.NeighbourKeys:  # noqa: N802
        if isinstance(self._round_or_none(request.round_id), CkksServerRound):
            return await self._ckks_advertise(request, context)
        advert = convert.advertisement_from_pb(request.advertisement)
        return await self._stage_call(
            context,
            request.round_id,
            advert.client_id,
            Stage.ADVERTISE_KEYS,
            lambda cid: lambda server: _secagg(server).receive(advert),
            message=advert,
            reply=lambda active, cid: convert.neighbour_keys_to_pb(
                _expect(_secagg(active.server).request_for(cid), ShareKeysRequest)
            ),
        )

    async def ShareKeys(
        self, request: pb.ShareKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.RelayedShares:  # noqa: N802
        response = convert.share_keys_from_pb(request)
        return await self._stage_call(
            context,
            request.round_id,
            request.client_id,
            Stage.SHARE_KEYS,
            lambda cid: lambda server: _secagg(server).receive(response),
            message=response,
            reply=lambda active, cid: convert.relayed_to_pb(
                _expect(_secagg(active.server).request_for(cid), MaskedInputRequest)
            ),
        )

    async def ConfirmSurvivors(
        self, request: pb.ConfirmSurvivorsRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnmaskInstructions:  # noqa: N802
        signature = convert.signature_from_pb(request.signature)
        return await self._stage_call(
            context,
            request.round_id,
            signature.client_id,
            Stage.CONSISTENCY_CHECK,
            lambda cid: lambda server: _secagg(server).receive(signature),
            message=signature,
            reply=lambda active, cid: convert.instructions_to_pb(
                _expect(_secagg(active.server).request_for(cid), UnmaskRequest)
            ),
        )

    async def Unmask(
        self, request: pb.UnmaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnmaskAck:  # noqa: N802
        response = convert.unmask_from_pb(request)
        return await self._stage_call(
            context,
            request.round_id,
            request.client_id,
            Stage.UNMASK,
            lambda cid: lambda server: _secagg(server).receive(response),
            message=response,
            reply=lambda active, cid: pb.UnmaskAck(stage=convert.STAGE_TO_PB[active.server.stage]),
        )

    # --- streamed masked input ----------------------------------------------------------

    async def UploadMaskedInput(
        self, request_iterator: AsyncIterator[pb.VectorChunk], context: grpc.aio.ServicerContext
    ) -> pb.SurvivorSet:  # noqa: N802
        async def work() -> pb.SurvivorSet:
            active, client_id, _ = await self._consume_upload(
                request_iterator, context, self._take_chunk
            )
            await active.wait_closed(Stage.MASKED_INPUT)
            async with self.coordinator.lock:
                return convert.survivors_to_pb(
                    _expect(_secagg(active.server).request_for(client_id), ConsistencyRequest)
                )

        return await self._guard(context, work())

    async def _consume_upload(
        self,
        request_iterator: AsyncIterator[pb.VectorChunk],
        context: grpc.aio.ServicerContext,
        take: Callable[[ActiveRound, str, pb.VectorChunk], Awaitable[bool]],
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
                client_id = self._caller(context, chunk.client_id)
                active = self.coordinator.get(chunk.round_id)
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
            # last chunk, which carries the digest).
            raise InvalidMessageError(
                f"the upload stream ended after chunk {last}, before the last chunk (the "
                "one that carries the SHA-256); the chunks received are kept: resume from "
                "GetUploadStatus's next_index"
            )
        return active, client_id, received

    async def _take_chunk(self, active: ActiveRound, client_id: str, chunk: pb.VectorChunk) -> bool:
        """Store and add one chunk; True once the upload is complete."""
        uploads = _secagg(active.server).uploads
        journal = self.coordinator.journal

        if chunk.index == uploads.chunk_count and not chunk.data:
            return await self.coordinator.uploads.rejoin_complete(active, client_id)

        def apply(server: object) -> bool:
            round_server = _secagg(active.server)
            del server  # the same object; the closure names it explicitly
            round_server.begin_masked_input(client_id, chunk.total_bytes)
            round_server.add_masked_chunk(client_id, chunk.index, chunk.data)
            journal.record_chunk(active.round_id, client_id, chunk.index, chunk.data)
            return self.coordinator.uploads.finish_if_last(
                active, client_id, bytes(chunk.sha256), round_server.finish_masked_input
            )

        _, done = await self.coordinator.submit(active.round_id, Stage.MASKED_INPUT, apply)
        return bool(done)

    async def GetUploadStatus(
        self, request: pb.UploadStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.UploadStatus:  # noqa: N802
        async def work() -> pb.UploadStatus:
            client_id = self._caller(context, request.client_id)
            active = self.coordinator.get(request.round_id)
            async with self.coordinator.lock:
                uploads = active.server.uploads
                if uploads is None:
                    raise StageError(f"round {request.round_id} is not collecting uploads yet")
                progress = uploads.progress(client_id)
                if client_id in active.server.uploaded:
                    return pb.UploadStatus(next_index=uploads.chunk_count, complete=True)
                return pb.UploadStatus(
                    next_index=progress.next_index if progress else 0, complete=False
                )

        return await self._guard(context, work())

    async def UploadPlaintext(
        self, request_iterator: AsyncIterator[pb.VectorChunk], context: grpc.aio.ServicerContext
    ) -> pb.UploadAck:  # noqa: N802
        async def work() -> pb.UploadAck:
            active, _, received = await self._consume_upload(
                request_iterator, context, self._take_plain_chunk
            )
            await active.wait_closed(Stage.MASKED_INPUT)
            return pb.UploadAck(received_bytes=received)

        return await self._guard(context, work())

    async def _take_plain_chunk(
        self, active: ActiveRound, client_id: str, chunk: pb.VectorChunk
    ) -> bool:
        journal = self.coordinator.journal
        _plain(active.server)

        def apply(server: object) -> bool:
            plain = _plain(server)
            plain.begin_upload(client_id, chunk.total_bytes, chunk.weight)
            plain.add_chunk(client_id, chunk.index, chunk.data)
            if chunk.index == 0:
                journal.record(
                    active.round_id, "plain-begin", client_id, str(chunk.weight).encode()
                )
            journal.record_chunk(active.round_id, client_id, chunk.index, chunk.data)
            return self.coordinator.uploads.finish_if_last(
                active, client_id, bytes(chunk.sha256), plain.finish_upload
            )

        _, done = await self.coordinator.submit(active.round_id, Stage.MASKED_INPUT, apply)
        return bool(done)

    # --- result -------------------------------------------------------------------------

    async def GetResult(
        self, request: pb.GetResultRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ResultChunk]:  # noqa: N802
        try:
            self._caller(context, request.client_id)
            active = self.coordinator.get(request.round_id)
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
        self.coordinator.record_download(request.round_id, request.client_id)


def _fingerprint(active: ActiveRound) -> bytes:
    """The key a CKKS round's sum is under (its own, in the round that made the key)."""
    server = active.server
    assert isinstance(server, CkksServerRound) and server.epoch is not None
    return server.epoch.fingerprint
