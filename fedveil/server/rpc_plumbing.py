"""What every RPC handler of the service does around its own conversion: name the
caller, find the round, map a FedveilError to its gRPC status, and for a stage RPC,
submit and long-poll on the stage's close.

Why one object the handlers share (not a base class they inherit): the SecAgg, CKKS,
plaintext and result handlers each live in a module of their own, and each needs exactly
this plumbing and nothing of the others. The roster is held here, once, so a roster the
server re-reads (revocation, re-enrolment) applies to every handler at the next call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from fedveil.errors import FedveilError, UnknownClientError
from fedveil.secagg.protocol.server import ServerRound
from fedveil.secagg.protocol.stages import Stage
from fedveil.server.active_round import ActiveRound, AnyRound
from fedveil.server.coordinator import RoundCoordinator
from fedveil.server.errors import abort_with
from fedveil.server.mode_refusal import refuse_unless
from fedveil.server.roster import Roster

T = TypeVar("T")


class RpcPlumbing:
    """Caller identity, error mapping and the submit-then-wait of a stage RPC."""

    def __init__(self, coordinator: RoundCoordinator, roster: Roster, *, insecure: bool) -> None:
        self.coordinator = coordinator
        self.roster = roster
        self.insecure = insecure

    def caller(self, context: grpc.aio.ServicerContext, claimed: str) -> str:
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

    async def guard(self, context: grpc.aio.ServicerContext, work: Awaitable[T]) -> T:
        """Await `work`; a FedveilError ends the RPC with its status and message."""
        try:
            return await work
        except FedveilError as exc:
            await abort_with(context, exc)
            raise  # unreachable: abort raises

    def round_or_none(self, round_id: int) -> AnyRound | None:
        """The round's state machine, or None (the stage call then names the error)."""
        active = self.coordinator.rounds.get(round_id)
        return active.server if active is not None else None

    async def stage_call(
        self,
        context: grpc.aio.ServicerContext,
        round_id: int,
        claimed: str,
        stage: Stage,
        submit: Callable[[str], Callable[[AnyRound], object]],
        reply: Callable[[ActiveRound, str], T],
        message: object,
        kind: type = ServerRound,
    ) -> T:
        """Submit the caller's `message` in `stage`, wait for the stage to close, and
        answer with `reply` (under the coordinator's lock)."""

        async def work() -> T:
            client_id = self.caller(context, claimed)
            active = self.coordinator.rounds.get(round_id)
            if active is not None:
                # the mode is named before the stage: "not open yet" would mislead
                refuse_unless(active.server, kind)
            active, _ = await self.coordinator.submit(
                round_id, stage, submit(client_id), message=message
            )
            await active.wait_closed(stage)
            async with self.coordinator.lock:
                return reply(active, client_id)

        return await self.guard(context, work())
