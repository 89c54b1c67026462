"""What the client hands the driver of a round's mode: the round as this client joined it.

Why its own module: every driver takes a RoundCall, and clients.mode_driver keeps the
table of the drivers themselves; with RoundCall there, the drivers and their table would
import each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedveil.clients.calls import RetryPolicy
from fedveil.proto import aggregation_pb2 as pb
from fedveil.secagg.crypto.identity import SigningIdentity, VerifyingIdentity
from fedveil.secagg.protocol.config import ClientPolicy


@dataclass(frozen=True)
class RoundCall:
    """One round as this client joined it: the channel, the spec and who the client is.

    `model_hash`: the model this client holds (its chain's next round hash); a session
    refuses a round about another one. `stage_timeout_s` bounds the long-poll stage
    calls, `unary_timeout_s` the short ones.
    """

    stub: Any
    spec: pb.RoundSpec
    client_id: str
    identity: SigningIdentity
    roster: Mapping[str, VerifyingIdentity]
    policy: ClientPolicy | None
    model_hash: bytes
    retry: RetryPolicy
    stage_timeout_s: float
    unary_timeout_s: float

    @property
    def round_id(self) -> int:
        return int(self.spec.round_id)
