"""Shared builders for protocol tests: an enrolled federation driven to a chosen stage."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from fedveil.runners.simulation import Federation
from fedveil.secagg.protocol.client import ClientSession
from fedveil.secagg.protocol.config import ClientPolicy, RoundConfig
from fedveil.secagg.protocol.server import ServerRound
from fedveil.secagg.protocol.stages import Stage
from fedveil.secagg.quantize import QuantizationConfig

MODEL_HASH = hashlib.sha256(b"fedveil-test-model").digest()


def make_round_config(
    federation: Federation,
    *,
    dimension: int = 16,
    neighbours: int | None = None,
    threshold: int | None = None,
    bits: int = 32,
    model_hash: bytes = MODEL_HASH,
    round_id: int = 7,
) -> RoundConfig:
    n = len(federation.identities)
    k = n - 1 if neighbours is None else neighbours
    t = (min(k, n - 1) + 1) // 2 + 1 if threshold is None else threshold
    return RoundConfig(
        round_id=round_id,
        roster=federation.ids,
        threshold=t,
        neighbours=k,
        dimension=dimension,
        quantization=QuantizationConfig(clip=1.0, bits=bits, max_cohort=n, max_weight=100),
        model_hash=model_hash,
    )


@dataclass
class LiveRound:
    """A server and its clients, stepped stage by stage with all clients honest."""

    federation: Federation
    config: RoundConfig
    server: ServerRound
    clients: dict[str, ClientSession]
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        n: int = 5,
        policy: ClientPolicy | None = None,
        chunk_bytes: int | None = None,
        **config_kwargs: object,
    ) -> LiveRound:
        federation = Federation.enrol(n)
        config = make_round_config(federation, **config_kwargs)  # type: ignore[arg-type]
        roster = federation.roster
        policy = policy or ClientPolicy(min_cohort=2, min_threshold=2)
        clients = {
            cid: ClientSession(config, cid, federation.identities[cid], roster, policy)
            for cid in config.roster
        }
        rng = np.random.default_rng(n)
        live = cls(
            federation, config, ServerRound(config, roster, chunk_bytes=chunk_bytes), clients
        )
        for cid, client in clients.items():
            live.inputs[cid] = rng.uniform(-1, 1, config.dimension).astype(np.float32)
            live.weights[cid] = int(rng.integers(1, 100))
            client.set_input(live.inputs[cid], live.weights[cid])
        return live

    def step(self, skip: frozenset[str] = frozenset()) -> None:
        """Run the server's current stage with every expected client except `skip`."""
        stage = self.server.stage
        senders = sorted(self.server.expected_senders())
        for cid in senders:
            if cid in skip:
                continue
            client = self.clients[cid]
            reply = (
                client.advertise()
                if stage is Stage.ADVERTISE_KEYS
                else client.handle(self.server.request_for(cid))
            )
            self.server.receive(reply)
        self.server.advance()

    def run_to(self, stage: Stage) -> LiveRound:
        while self.server.stage is not stage:
            self.step()
        return self
