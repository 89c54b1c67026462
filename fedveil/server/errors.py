"""Errors of the service layer and the one place FedveilErrors become gRPC statuses.

Why one mapping: every RPC must answer a bad request with a specific status and a message
that says what to fix; each error class names its status (`grpc_status`), so the servicer
never guesses and never leaks a stack trace.
"""

from __future__ import annotations

import logging

import grpc

from fedveil.errors import FedveilError, ProtocolError, StageError

log = logging.getLogger(__name__)


class UnknownRoundError(ProtocolError):
    """The request names a round this server does not know (or no longer keeps)."""

    grpc_status = "NOT_FOUND"


class StageClosedError(StageError):
    """The message belongs to a stage whose deadline already passed."""

    grpc_status = "DEADLINE_EXCEEDED"


class RoundFailedError(ProtocolError):
    """The round failed (fails closed); the message carries the reason."""

    grpc_status = "FAILED_PRECONDITION"


def status_of(error: FedveilError) -> grpc.StatusCode:
    try:
        return grpc.StatusCode[error.grpc_status]
    except KeyError:
        return grpc.StatusCode.INTERNAL


async def abort_with(context: grpc.aio.ServicerContext, error: FedveilError) -> None:
    """End the RPC with the error's status and message (raises grpc's abort exception)."""
    code = status_of(error)
    log.info("refused %s: %s", code.name, error)
    await context.abort(code, f"{type(error).__name__}: {error}")
