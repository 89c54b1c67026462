"""Which mode a round runs in, as the RPC handlers see it: an RPC of another mode's round
is refused with the RPCs that round does take.

Why one place: every handler narrows the round's state machine to its own mode before it
touches it, and a client that called the wrong mode's RPC must learn which calls to make
instead of a bare "not open yet" (the stage names are shared by the modes, so a stage
error alone would mislead).
"""

from __future__ import annotations

from typing import TypeVar

from fedveil.errors import StageError
from fedveil.secagg.ckks.server_round import CkksServerRound
from fedveil.secagg.protocol.server import ServerRound
from fedveil.server.plaintext import PlaintextRound

R = TypeVar("R")

HOW_TO: dict[type, str] = {
    PlaintextRound: "this round runs in plaintext mode: use UploadPlaintext, then GetResult",
    CkksServerRound: (
        "this round runs in ckks mode: use AdvertiseKeys, FetchCkksKeys (or PublishCkksKeys "
        "as the key holder), UploadCiphertext, then GetResult"
    ),
    ServerRound: "this round runs in secagg mode: use the SecAgg stage RPCs",
}


def refuse_unless(server: object, kind: type) -> None:
    """StageError naming the round's own RPCs unless `server` is a `kind` round."""
    if not isinstance(server, kind):
        raise StageError(HOW_TO[type(server)])


def secagg_round(server: object) -> ServerRound:
    """The round as a SecAgg round; a SecAgg stage RPC on another mode's round is refused."""
    if not isinstance(server, ServerRound):
        raise StageError(HOW_TO[type(server)])
    return server


def plaintext_round(server: object) -> PlaintextRound:
    """The round as a plaintext round; a plaintext upload to another mode's round is refused."""
    if not isinstance(server, PlaintextRound):
        raise StageError(HOW_TO[type(server)])
    return server


def ckks_round(server: object) -> CkksServerRound:
    """The round as a CKKS round; a CKKS RPC on another mode's round is refused."""
    if not isinstance(server, CkksServerRound):
        raise StageError("this round does not run in ckks mode: use the RPCs of its mode")
    return server


def expect(request: object, kind: type[R]) -> R:
    """The state machine's request for the stage just opened, with its static type."""
    if not isinstance(request, kind):
        raise TypeError(f"expected {kind.__name__}, the round produced {type(request).__name__}")
    return request
