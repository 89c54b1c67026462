"""The fedveil.v1.Aggregation servicer: each RPC handed to the handler of its mode.

Why it holds no logic of its own: authentication comes from the roster, validation from
the state machine, timing from the coordinator. The handlers live one concept to a
module: the shared plumbing (server.rpc_plumbing: caller, error mapping, stage long
polls), which mode a round runs in (server.mode_refusal), the upload streams
(server.upload_stream), the SecAgg stages (server.secagg_handlers), CKKS
(server.ckks_handlers), the plaintext baseline (server.plaintext_handlers) and the result
download (server.result_stream). This class is only the gRPC method table.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from fedveil.proto import aggregation_pb2 as pb
from fedveil.proto import aggregation_pb2_grpc as pb_grpc
from fedveil.secagg.ckks.server_round import CkksServerRound
from fedveil.server.ckks_handlers import CkksHandlers
from fedveil.server.coordinator import RoundCoordinator
from fedveil.server.errors import RoundFailedError
from fedveil.server.plaintext_handlers import PlaintextHandlers
from fedveil.server.result_stream import ResultStream
from fedveil.server.roster import Roster
from fedveil.server.rpc_plumbing import RpcPlumbing
from fedveil.server.secagg_handlers import SecAggHandlers
from fedveil.server.status import wire_stage
from fedveil.server.upload_stream import UploadStreams


class AggregationServicer(pb_grpc.AggregationServicer):
    """The gRPC method table of the service; every method delegates."""

    def __init__(self, coordinator: RoundCoordinator, roster: Roster, *, insecure: bool) -> None:
        self.calls = RpcPlumbing(coordinator, roster, insecure=insecure)
        streams = UploadStreams(self.calls)
        self.streams = streams
        self.secagg = SecAggHandlers(self.calls, streams)
        self.ckks = CkksHandlers(self.calls, streams)
        self.plaintext = PlaintextHandlers(self.calls, streams)
        self.results = ResultStream(self.calls)

    @property
    def coordinator(self) -> RoundCoordinator:
        return self.calls.coordinator

    @property
    def roster(self) -> Roster:
        """The roster every handler authorises against (the server swaps in a re-read one)."""
        return self.calls.roster

    @roster.setter
    def roster(self, fresh: Roster) -> None:
        self.calls.roster = fresh

    # --- discovery ----------------------------------------------------------------------

    async def GetRound(
        self, request: pb.GetRoundRequest, context: grpc.aio.ServicerContext
    ) -> pb.RoundInfo:  # noqa: N802
        async def work() -> pb.RoundInfo:
            self.calls.caller(context, request.client_id)
            active = self.coordinator.current
            if active is None:
                raise RoundFailedError("no round is open on this server (all rounds have run)")
            return pb.RoundInfo(spec=active.spec, stage=wire_stage(active.server))

        return await self.calls.guard(context, work())

    # --- stages: SecAgg, or CKKS for AdvertiseKeys on a CKKS round -----------------------

    async def AdvertiseKeys(
        self, request: pb.AdvertiseKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.NeighbourKeys:  # noqa: N802
        if isinstance(self.calls.round_or_none(request.round_id), CkksServerRound):
            return await self.ckks.advertise_keys(request, context)
        return await self.secagg.advertise_keys(request, context)

    async def ShareKeys(
        self, request: pb.ShareKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.RelayedShares:  # noqa: N802
        return await self.secagg.share_keys(request, context)

    async def ConfirmSurvivors(
        self, request: pb.ConfirmSurvivorsRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnmaskInstructions:  # noqa: N802
        return await self.secagg.confirm_survivors(request, context)

    async def Unmask(
        self, request: pb.UnmaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnmaskAck:  # noqa: N802
        return await self.secagg.unmask(request, context)

    async def PublishCkksKeys(
        self, request: pb.CkksKeyPublication, context: grpc.aio.ServicerContext
    ) -> pb.CkksPublicationAck:  # noqa: N802
        return await self.ckks.publish_keys(request, context)

    async def FetchCkksKeys(
        self, request: pb.FetchCkksKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.CkksKeyDelivery:  # noqa: N802
        return await self.ckks.fetch_keys(request, context)

    # --- uploads ------------------------------------------------------------------------

    async def UploadMaskedInput(
        self, request_iterator: AsyncIterator[pb.VectorChunk], context: grpc.aio.ServicerContext
    ) -> pb.SurvivorSet:  # noqa: N802
        return await self.secagg.upload_masked_input(request_iterator, context)

    async def UploadCiphertext(
        self, request_iterator: AsyncIterator[pb.VectorChunk], context: grpc.aio.ServicerContext
    ) -> pb.UploadAck:  # noqa: N802
        return await self.ckks.upload_ciphertext(request_iterator, context)

    async def UploadPlaintext(
        self, request_iterator: AsyncIterator[pb.VectorChunk], context: grpc.aio.ServicerContext
    ) -> pb.UploadAck:  # noqa: N802
        return await self.plaintext.upload_plaintext(request_iterator, context)

    async def GetUploadStatus(
        self, request: pb.UploadStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.UploadStatus:  # noqa: N802
        return await self.streams.status(request, context)

    # --- result -------------------------------------------------------------------------

    async def GetResult(
        self, request: pb.GetResultRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ResultChunk]:  # noqa: N802
        async for chunk in self.results.get_result(request, context):
            yield chunk
