"""A shard of simulated SecAgg+ clients: real ClientSession objects behind one object.

Why a shard and not one object per client: a thousand clients must not mean a thousand
processes (or Ray actors). One shard holds n/workers sessions and answers the server's
requests for a batch of them at a time; the Ray backend (runners.ray_backend) wraps this
class as an actor, and nothing here imports Ray, so it also runs (and is tested) in-process.

Why the inputs are generated here: shipping n vectors of d floats from a driver would cost
more than the protocol being measured. Each client draws its own update from a per-client
seed (`client_input`), turns it into ring elements only when its masked input is due (so a
shard holds at most one plain update at a time), and the shard keeps the running sums of
what its uploading clients contributed: in the ring (what the server must decode exactly)
and in float (the plaintext weighted sum, timed, as the reference a plaintext server pays).

Keys and masks are not seeded: every ClientSession draws them from the OS, as in production.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from fedveil.errors import FedveilError
from fedveil.secagg.crypto.identity import SigningIdentity, VerifyingIdentity
from fedveil.secagg.protocol.client import ClientSession
from fedveil.secagg.protocol.config import ClientPolicy, RoundConfig
from fedveil.secagg.protocol.messages import MaskedInputRequest

INPUT_STD = 0.1
"""Inputs are N(0, INPUT_STD^2) float32, as in `fedveil simulate-secagg` and the benchmark."""


def client_input(seed: int, index: int, dimension: int) -> np.ndarray:
    """Client `index`'s update: float32 N(0, 0.1^2) from numpy seeded by (seed, index).

    Anyone holding (seed, index) regenerates the same vector, which is how tests and the
    local backend compute the plaintext reference without the vectors ever travelling.
    """
    rng = np.random.default_rng([seed, index])
    return (rng.standard_normal(dimension) * INPUT_STD).astype(np.float32)


def client_weight(seed: int, index: int, max_weight: int) -> int:
    """Client `index`'s weight (example count): 1, or uniform in [1, max_weight]."""
    if max_weight <= 1:
        return 1
    rng = np.random.default_rng([seed, index, 1])
    return int(rng.integers(1, max_weight + 1))


@dataclass(frozen=True)
class ShardReply:
    """What a shard returns for one batch: (client id, reply message) per client that
    answered, its time per client, and the clients that refused (id, reason)."""

    replies: tuple[tuple[str, object], ...]
    seconds: tuple[float, ...]
    refusals: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ShardTotals:
    """Sums over the shard's clients whose masked input left: the ring sum of their
    quantised updates (d + 1 elements, reduced), the float64 weighted sum of their clipped
    inputs, their total weight, who they are, and the seconds the float sum took."""

    ring_sum: np.ndarray
    float_sum: np.ndarray
    total_weight: int
    contributors: tuple[str, ...]
    plaintext_seconds: float


@dataclass
class ClientShard:
    """Clients `client_ids` (with roster indices `indices`, which seed their inputs)."""

    client_ids: tuple[str, ...]
    indices: tuple[int, ...]
    seed: int
    _identities: dict[str, SigningIdentity] = field(default_factory=dict, init=False)
    _sessions: dict[str, ClientSession] = field(default_factory=dict, init=False)
    _index: dict[str, int] = field(default_factory=dict, init=False)
    _config: RoundConfig | None = field(default=None, init=False)
    _ring_sum: np.ndarray | None = field(default=None, init=False)
    _float_sum: np.ndarray | None = field(default=None, init=False)
    _weight: int = field(default=0, init=False)
    _contributors: list[str] = field(default_factory=list, init=False)
    _plaintext_seconds: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        if len(self.client_ids) != len(self.indices):
            raise ValueError("one roster index per client id")
        self._index = dict(zip(self.client_ids, self.indices, strict=True))

    def enrol(self) -> dict[str, bytes]:
        """Generate each client's Ed25519 identity here (the private key never leaves the
        shard) and return the public keys for the roster."""
        self._identities = {cid: SigningIdentity.generate() for cid in self.client_ids}
        return {cid: ident.verifying().public_bytes for cid, ident in self._identities.items()}

    def open_round(
        self,
        config: RoundConfig,
        roster: dict[str, bytes],
        policy: ClientPolicy | None = None,
    ) -> ShardReply:
        """Start a ClientSession per client; a client whose policy refuses the round is
        reported and takes no part (as in runners.simulation.run_round)."""
        identities = {cid: VerifyingIdentity(raw) for cid, raw in roster.items()}
        policy = policy or ClientPolicy(min_cohort=2, min_threshold=2)
        self._config = config
        ring = config.quantization.ring
        self._ring_sum = ring.zeros(config.element_count)
        self._float_sum = np.zeros(config.dimension, dtype=np.float64)
        self._weight, self._contributors, self._plaintext_seconds = 0, [], 0.0
        self._sessions = {}
        seconds: list[float] = []
        refusals: list[tuple[str, str]] = []
        for cid in self.client_ids:
            start = time.perf_counter()
            try:
                self._sessions[cid] = ClientSession(
                    config, cid, self._identities[cid], identities, policy
                )
            except FedveilError as exc:
                refusals.append((cid, str(exc)))
                continue
            seconds.append(time.perf_counter() - start)
        return ShardReply((), tuple(seconds), tuple(refusals))

    def handle(self, requests: list[tuple[str, object | None]]) -> ShardReply:
        """Answer one batch: a None request means "advertise your keys" (stage 1)."""
        replies: list[tuple[str, object]] = []
        seconds: list[float] = []
        refusals: list[tuple[str, str]] = []
        for cid, request in requests:
            session = self._sessions[cid]
            # The update is drawn before the clock starts: generating it is the
            # simulation's cost, quantising and masking it are the client's.
            drawn = self._draw(cid) if isinstance(request, MaskedInputRequest) else None
            start = time.perf_counter()
            try:
                if request is None:
                    reply: object = session.advertise()
                else:
                    quantized = None
                    if drawn is not None:
                        quantized = session.set_input(drawn[0], drawn[1])
                    reply = session.handle(request)
            except FedveilError as exc:
                refusals.append((cid, str(exc)))
                continue
            seconds.append(time.perf_counter() - start)
            if drawn is not None and quantized is not None:
                self._count(cid, drawn[0], drawn[1], quantized.values)
            replies.append((cid, reply))
        return ShardReply(tuple(replies), tuple(seconds), tuple(refusals))

    def _draw(self, cid: str) -> tuple[np.ndarray, int]:
        """This client's update and weight, regenerated from its seed."""
        assert self._config is not None
        index = self._index[cid]
        update = client_input(self.seed, index, self._config.dimension)
        return update, client_weight(self.seed, index, self._config.quantization.max_weight)

    def _count(self, cid: str, update: np.ndarray, weight: int, quantized: np.ndarray) -> None:
        """Add a client whose masked input now exists into the shard's sums (a client that
        refused before masking is never counted)."""
        config = self._config
        assert config is not None and self._ring_sum is not None and self._float_sum is not None
        np.add(self._ring_sum, quantized, out=self._ring_sum)
        config.quantization.ring.reduce(self._ring_sum)
        clip = config.quantization.clip
        start = time.perf_counter()
        self._float_sum += weight * np.clip(update, -clip, clip).astype(np.float64)
        self._plaintext_seconds += time.perf_counter() - start
        self._weight += weight
        self._contributors.append(cid)

    def totals(self) -> ShardTotals:
        """The shard's sums over its uploading clients (call after the round)."""
        assert self._ring_sum is not None and self._float_sum is not None
        return ShardTotals(
            self._ring_sum,
            self._float_sum,
            self._weight,
            tuple(self._contributors),
            self._plaintext_seconds,
        )

    def close(self) -> None:
        """Drop the sessions and sums (an actor may be reused for another round)."""
        self._sessions.clear()
        self._ring_sum = self._float_sum = None
