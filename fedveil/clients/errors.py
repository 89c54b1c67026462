"""Errors the client SDK raises when the aggregation service, or the wire, says no.

Why a separate class: a caller of the SDK must tell "the server refused (and why)" from a
local protocol refusal (secagg's MaliciousServerError and friends), and it needs the gRPC
status name to decide what to do next (wait for the next round, re-enrol, give up).
`str()` shows the status name and the server's own message, so a log line is enough to
act on.
"""

from __future__ import annotations

import grpc

from fedveil.errors import FedveilError


class TransportError(FedveilError):
    """A call to the aggregation service failed; `code` is the gRPC status name.

    `details` is the server's message, unchanged; `rpc` names the call that failed
    (empty when the failure is not tied to one call).
    """

    def __init__(self, code: str, details: str, *, rpc: str = "") -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details
        self.rpc = rpc
        self.grpc_status = code

    def __str__(self) -> str:
        return f"{self.code}: {self.details}"


class StreamIntegrityError(TransportError):
    """A streamed vector arrived malformed, truncated or with the wrong digest."""

    def __init__(self, details: str, *, rpc: str = "") -> None:
        super().__init__("DATA_LOSS", details, rpc=rpc)


def from_rpc_error(exc: grpc.RpcError, rpc: str = "") -> TransportError:
    """Keep the status name and the server's message of a failed call."""
    code_of = getattr(exc, "code", None)
    details_of = getattr(exc, "details", None)
    code = code_of() if callable(code_of) else None
    details = details_of() if callable(details_of) else None
    name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    return TransportError(name, details or f"{rpc or 'call'} failed without a message", rpc=rpc)
