"""What the client hands the driver of a round's mode, and what every driver answers.

Why an interface: the client joins a round, checks that it may take part (mode pinning,
the model chain, the update's shape) and accepts the aggregate the same way whatever
the mode; only the stage RPCs in between differ. Each mode's driver (clients.
secagg_driver, clients.ckks_driver, clients.plaintext_driver) takes a RoundCall and
returns what it received (clients.result.Received) for the client to accept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from fedveil.clients.calls import RetryPolicy
from fedveil.clients.result import Received
from fedveil.clients.streams import TensorLayout
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


class ModeDriver(Protocol):
    """Drives one round of its mode for one client."""

    mode: str  # the mode's name, as clients.mode_policy names it
    adds_dp_noise: bool  # whether a round of the mode can carry a client's DP noise

    async def run(
        self, call: RoundCall, update: np.ndarray, weight: int, layout: TensorLayout | None
    ) -> Received:
        """Take part in every stage and return the result as received (not yet accepted)."""
        ...
