"""An in-process SecAgg+ round built from the protocol classes, for the active attacks.

Why here and not fedveil.runners.simulation: attacks/ may not import the runners (they
are injected), yet the active-server rows need the real round's parts one by one: who is
enrolled, the sessions the attacker controls, and the result the server publishes. Every
party runs the real ClientSession; the server runs the real ServerRound.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedveil.errors import ConfigError
from fedveil.secagg.crypto.identity import SigningIdentity, VerifyingIdentity
from fedveil.secagg.protocol.client import ClientSession
from fedveil.secagg.protocol.config import ClientPolicy, RoundConfig
from fedveil.secagg.protocol.messages import RoundResult
from fedveil.secagg.protocol.server import ServerRound
from fedveil.secagg.protocol.stages import Stage
from fedveil.secagg.quantize import QuantizationConfig

BASE_MODEL_HASH = hashlib.sha256(b"fedveil-active-attacks-base-model").digest()
CLIP = 1.0
MAX_WEIGHT = 100
BITS = 32


@dataclass(frozen=True)
class Enrolment:
    """Identities on the roster: who holds each signing key is the attacker's business."""

    identities: Mapping[str, SigningIdentity]

    @classmethod
    def of(cls, ids: Sequence[str]) -> Enrolment:
        return cls({cid: SigningIdentity.generate() for cid in ids})

    @property
    def roster(self) -> dict[str, VerifyingIdentity]:
        return {cid: identity.verifying() for cid, identity in self.identities.items()}


def round_config(
    ids: Sequence[str],
    *,
    dimension: int,
    round_id: int = 1,
    model_hash: bytes = BASE_MODEL_HASH,
    clip: float = CLIP,
) -> RoundConfig:
    """A classic SecAgg round (complete graph, majority threshold) over `ids`."""
    n = len(ids)
    return RoundConfig(
        round_id=round_id,
        roster=tuple(ids),
        threshold=n // 2 + 1,
        neighbours=n - 1,
        dimension=dimension,
        quantization=QuantizationConfig(clip=clip, bits=BITS, max_cohort=n, max_weight=MAX_WEIGHT),
        model_hash=model_hash,
    )


def default_policy(min_cohort: int = 2) -> ClientPolicy:
    return ClientPolicy(min_cohort=min_cohort, min_threshold=2)


def run_round(
    config: RoundConfig,
    enrolment: Enrolment,
    inputs: Mapping[str, np.ndarray],
    weights: Mapping[str, int],
    policy: ClientPolicy | None = None,
) -> RoundResult:
    """Every roster member runs the real client; the real server sums and unmasks."""
    roster = enrolment.roster
    chosen = policy or default_policy()
    sessions = {
        cid: ClientSession(config, cid, enrolment.identities[cid], roster, chosen)
        for cid in config.roster
    }
    for cid, session in sessions.items():
        session.set_input(np.asarray(inputs[cid], dtype=np.float64), int(weights[cid]))
    server = ServerRound(config, roster)
    while server.stage not in (Stage.DONE, Stage.FAILED):
        stage = server.stage
        for cid in sorted(server.expected_senders()):
            session = sessions[cid]
            reply = (
                session.advertise()
                if stage is Stage.ADVERTISE_KEYS
                else session.handle(server.request_for(cid))
            )
            server.receive(reply)
        server.advance()
    if server.result is None:
        raise ConfigError(f"the SecAgg round failed at {server.failed_at}: {server.failure}")
    return server.result
