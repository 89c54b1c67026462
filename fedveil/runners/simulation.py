"""One-process SecAgg+ simulation: n clients and one server wired together in memory.

Why it exists: it is the composition root for the crypto core before the gRPC service,
the harness the property tests drive with dropout schedules, and what `fedveil
simulate-secagg` and the benchmark time, stage by stage. The inputs and the dropout
schedule use numpy's generator; no key or mask does (they come from os.urandom and
AES-CTR inside the protocol).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedveil.errors import FedveilError
from fedveil.secagg.crypto.identity import SigningIdentity, VerifyingIdentity
from fedveil.secagg.dp.accounting import EpsilonReport
from fedveil.secagg.dp.budget import PrivacyLedger
from fedveil.secagg.dp.config import ClientDPConfig
from fedveil.secagg.protocol.client import ClientSession
from fedveil.secagg.protocol.config import ClientPolicy, RoundConfig
from fedveil.secagg.protocol.dp import RoundDP
from fedveil.secagg.protocol.graph import default_neighbours, default_threshold
from fedveil.secagg.protocol.messages import MaskedInput, RoundResult
from fedveil.secagg.protocol.server import ServerRound
from fedveil.secagg.protocol.stages import Stage
from fedveil.secagg.quantize import QuantizationConfig

CLIENT_STAGES = (
    Stage.ADVERTISE_KEYS,
    Stage.SHARE_KEYS,
    Stage.MASKED_INPUT,
    Stage.CONSISTENCY_CHECK,
    Stage.UNMASK,
)


def wire_bytes(message: object) -> int:
    """Payload bytes of a protocol message: bytes and strings, framing excluded."""
    if isinstance(message, bytes | bytearray):
        return len(message)
    if isinstance(message, str):
        return len(message.encode())
    if isinstance(message, tuple | list):
        return sum(wire_bytes(item) for item in message)
    if dataclasses.is_dataclass(message) and not isinstance(message, type):
        return sum(wire_bytes(getattr(message, f.name)) for f in dataclasses.fields(message))
    return 0


@dataclass
class Federation:
    """Enrolled clients: their signing identities and the roster of public identities."""

    identities: dict[str, SigningIdentity]

    @classmethod
    def enrol(cls, n: int, prefix: str = "client") -> Federation:
        width = len(str(n - 1))
        return cls({f"{prefix}-{i:0{width}d}": SigningIdentity.generate() for i in range(n)})

    @property
    def roster(self) -> dict[str, VerifyingIdentity]:
        return {cid: ident.verifying() for cid, ident in self.identities.items()}

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(sorted(self.identities))


@dataclass
class RoundReport:
    """What one simulated round did, stage by stage."""

    result: RoundResult | None
    failure: FedveilError | None
    final_stage: Stage
    failed_at: Stage | None = None
    client_seconds: dict[str, list[float]] = field(default_factory=dict)
    server_seconds: dict[str, float] = field(default_factory=dict)
    upload_bytes: dict[str, int] = field(default_factory=dict)
    download_bytes: dict[str, int] = field(default_factory=dict)
    masked_input_bytes: int = 0
    unmask_keystreams: int = 0
    refusals: dict[str, FedveilError] = field(default_factory=dict)
    quantized: dict[str, np.ndarray] = field(default_factory=dict)
    privacy_spent: dict[str, EpsilonReport] = field(default_factory=dict)


def make_config(
    federation: Federation,
    dimension: int,
    *,
    round_id: int = 1,
    neighbours: int | None = None,
    threshold: int | None = None,
    bits: int = 32,
    clip: float = 1.0,
    max_weight: int = 1000,
    model_hash: bytes | None = None,
    dp: ClientDPConfig | RoundDP | None = None,
) -> RoundConfig:
    """A round for the whole federation. With `dp` (a ClientDPConfig, or a RoundDP with
    accounting terms) it is a DP round: bits, clip and max_weight then come from the DP
    config, whose dim must be `dimension`."""
    n = len(federation.identities)
    k = default_neighbours(n) if neighbours is None else neighbours
    t = default_threshold(n, k) if threshold is None else threshold
    round_dp = RoundDP(dp) if isinstance(dp, ClientDPConfig) else dp
    quantization = (
        round_dp.config.quantization
        if round_dp is not None
        else QuantizationConfig(clip=clip, bits=bits, max_cohort=n, max_weight=max_weight)
    )
    return RoundConfig(
        round_id=round_id,
        roster=federation.ids,
        threshold=t,
        neighbours=k,
        dimension=dimension,
        quantization=quantization,
        model_hash=model_hash or hashlib.sha256(b"fedveil-simulated-model").digest(),
        dp=round_dp,
    )


def run_round(
    config: RoundConfig,
    federation: Federation,
    inputs: Mapping[str, np.ndarray],
    weights: Mapping[str, int] | None = None,
    dropouts: Mapping[str, Stage] | None = None,
    policy: ClientPolicy | None = None,
    *,
    keep_quantized: bool = False,
    ledgers: Mapping[str, PrivacyLedger] | None = None,
    noise_seed: bytes | None = None,
) -> RoundReport:
    """Run one round; a client in `dropouts` stops before sending that stage's message.

    A failure (below threshold, or a refused request) is reported, not raised. A client
    that refuses the round itself (its policy, or its privacy ledger in `ledgers` being
    over budget) is in `report.refusals` and sends nothing. `weights` default to 1 (and
    are not used in DP rounds); `noise_seed` keys the server's noise in central DP.
    """
    dropouts = dict(dropouts or {})
    policy = policy or ClientPolicy(min_cohort=2, min_threshold=2)
    ledgers = dict(ledgers or {})
    roster = federation.roster
    server = ServerRound(config, roster, noise_seed=noise_seed)
    report = RoundReport(result=None, failure=None, final_stage=server.stage)
    clients: dict[str, ClientSession] = {}
    for cid in config.roster:
        try:
            clients[cid] = ClientSession(
                config, cid, federation.identities[cid], roster, policy, ledger=ledgers.get(cid)
            )
        except FedveilError as exc:
            report.refusals[cid] = exc
    report.upload_bytes = dict.fromkeys(config.roster, 0)
    report.download_bytes = dict.fromkeys(config.roster, 0)
    for cid, session in clients.items():
        if dropouts.get(cid) is not Stage.ADVERTISE_KEYS:
            weight = 1 if weights is None else int(weights[cid])
            quantized = session.set_input(np.asarray(inputs[cid]), weight)
            if keep_quantized:
                report.quantized[cid] = quantized.values.copy()

    def alive(cid: str, stage: Stage) -> bool:
        if cid in report.refusals:
            return False
        drop = dropouts.get(cid)
        return drop is None or CLIENT_STAGES.index(stage) < CLIENT_STAGES.index(drop)

    try:
        for stage in CLIENT_STAGES:
            _run_stage(stage, server, clients, alive, report)
    except FedveilError as exc:
        report.failure = exc
    report.final_stage = server.stage
    report.failed_at = server.failed_at
    report.result = server.result
    report.privacy_spent = {
        cid: session.privacy_spent
        for cid, session in clients.items()
        if session.privacy_spent is not None
    }
    if server.unmask_work is not None:
        report.unmask_keystreams = server.unmask_work.keystreams
    return report


def _run_stage(
    stage: Stage,
    server: ServerRound,
    clients: Mapping[str, ClientSession],
    alive: Callable[[str, Stage], bool],
    report: RoundReport,
) -> None:
    """Deliver one stage's requests and replies; a client that refuses counts as dropped."""
    times: list[float] = []
    server_time = 0.0
    if stage is Stage.ADVERTISE_KEYS:
        senders = list(server.config.roster)
    else:
        senders = sorted(server.expected_senders())
    for cid in senders:
        if not alive(cid, stage):
            continue
        request = None if stage is Stage.ADVERTISE_KEYS else server.request_for(cid)
        start = time.perf_counter()
        try:
            reply = clients[cid].advertise() if request is None else clients[cid].handle(request)
        except FedveilError as exc:
            report.refusals[cid] = exc
            continue
        times.append(time.perf_counter() - start)
        report.download_bytes[cid] += wire_bytes(request)
        report.upload_bytes[cid] += wire_bytes(reply)
        if isinstance(reply, MaskedInput):
            report.masked_input_bytes = len(reply.payload)
        start = time.perf_counter()
        server.receive(reply)
        server_time += time.perf_counter() - start
    start = time.perf_counter()
    try:
        server.advance()
    finally:
        report.client_seconds[stage.value] = times
        report.server_seconds[stage.value] = server_time + time.perf_counter() - start


def random_dropouts(
    ids: tuple[str, ...],
    fraction: float,
    rng: np.random.Generator,
    stages: tuple[Stage, ...] = CLIENT_STAGES,
) -> dict[str, Stage]:
    """Drop round(fraction * n) clients, each at a stage drawn from `stages`."""
    count = round(fraction * len(ids))
    chosen: list[int] = [int(i) for i in rng.choice(len(ids), size=count, replace=False)]
    return {ids[i]: stages[int(rng.integers(len(stages)))] for i in chosen}


def secure_mean(
    updates: Sequence[np.ndarray], weights: Sequence[int], *, bits: int = 32
) -> tuple[np.ndarray, int]:
    """A real in-process SecAgg+ round: what the server decodes (the weighted mean and the
    total weight), and nothing else. The clip is set just above the largest |value|, so
    nothing is clipped; the attack suite uses this as the "secagg" view."""
    if not updates or len(updates) != len(weights):
        raise FedveilError("need one weight per update, and at least one update")
    federation = Federation.enrol(len(updates))
    clip = 1.01 * max(float(np.abs(u).max()) for u in updates) or 1.0
    config = make_config(
        federation, updates[0].shape[0], clip=clip, bits=bits, max_weight=max(weights)
    )
    report = run_round(
        config,
        federation,
        dict(zip(federation.ids, updates, strict=True)),
        dict(zip(federation.ids, weights, strict=True)),
    )
    if report.failure is not None or report.result is None:
        raise FedveilError(f"the secure round failed: {report.failure}")
    return report.result.estimate.weighted_mean, report.result.estimate.total_weight


def secure_dp_mean(
    updates: Sequence[np.ndarray], weights: Sequence[int], *, dp: ClientDPConfig
) -> tuple[np.ndarray, int]:
    """A real in-process SecAgg+ round with client-level distributed DP: the noised mean
    the server decodes and the number of contributors. Every client clips to
    dp.clip_norm and adds its share of the noise before masking (secagg/dp's stages);
    DP rounds weigh clients equally, so `weights` only has to match `updates`. Used as
    the "secagg+client-dp" view of the attack suite and the audit."""
    if not updates or len(updates) != len(weights):
        raise FedveilError("need one weight per update, and at least one update")
    if updates[0].shape[0] != dp.dim:
        raise FedveilError(
            f"the DP config is for updates of length {dp.dim}, got {updates[0].shape[0]}"
        )
    federation = Federation.enrol(len(updates))
    config = make_config(federation, dp.dim, dp=dp)
    report = run_round(config, federation, dict(zip(federation.ids, updates, strict=True)))
    if report.failure is not None or report.result is None or report.result.dp is None:
        raise FedveilError(f"the secure DP round failed: {report.failure}")
    return report.result.dp.mean, report.result.dp.contributors
