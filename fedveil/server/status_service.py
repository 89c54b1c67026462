"""The fedveil.v1.Operations servicer: GetStatus, for the federation's operators only.

Why a service apart from Aggregation: parties speak Aggregation; nothing a party needs is
here, and a party's certificate is refused (server.operators). The call guard covers this
service too (call cap, strict decoding), so an operator's calls are counted and capped
like anyone's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import grpc

from fedveil.errors import FedveilError
from fedveil.proto import aggregation_pb2 as pb
from fedveil.proto import aggregation_pb2_grpc as pb_grpc
from fedveil.server.coordinator import RoundCoordinator
from fedveil.server.errors import abort_with
from fedveil.server.operators import authorize_operator
from fedveil.server.status import server_status

OPERATIONS_NAME = pb.DESCRIPTOR.services_by_name["Operations"].full_name


class OperationsServicer(pb_grpc.OperationsServicer):
    """Answers an operator's GetStatus from the coordinator's state."""

    def __init__(
        self,
        coordinator: RoundCoordinator,
        keys_dir: Path | None,
        connected: Callable[[], Iterable[str]],
    ) -> None:
        self.coordinator = coordinator
        self.keys_dir = keys_dir
        self.connected = connected

    async def GetStatus(
        self, request: pb.StatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerStatus:  # noqa: N802
        try:
            authorize_operator(context.auth_context(), self.keys_dir)
            # Not under the coordinator's lock: a status is most wanted when a round is
            # stuck, and the lock is held through a stage close (an unmask can take
            # seconds). Built on the event loop without an await, it reads one consistent
            # moment of the loop's state.
            return server_status(self.coordinator, self.connected)
        except FedveilError as exc:
            await abort_with(context, exc)
            raise  # unreachable: abort raises
