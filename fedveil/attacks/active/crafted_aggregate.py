"""A server that returns a crafted aggregate, and what the clients' defences make of it.

Why: the masks stop the server reading an update, not choosing the model the next
round's updates are computed on. Three crafted results, each handed to the real client
acceptance path (fedveil.clients.result.accept: the aggregate bounds of
secagg.protocol.aggregate_bounds, then the model chain of secagg.protocol.model_chain)
and to the real next SecAgg round:

(a) trap / imprint adapter (Fowl et al. 2022, "Robbing the fed"): rows of a linear+ReLU
    block share one direction with staggered biases, so each record of the next round
    falls in its own bin and the difference of neighbouring rows' gradients divided by
    that of their biases is the record itself. Binning separates records across the
    whole cohort, so it survives summation: the SecAgg aggregate leaks as well.
(b) zero-others LoRA: A and B zero everywhere except A set to a projection, B = 0; the
    next update is then nothing but dL/dB = -t (A x)^T, rank one per record, whose
    right singular vector is the projected input. Sent to everyone, the sum mixes the
    clients; it isolates one client only combined with (c) or Sybils.
(c) model inconsistency (Pasquini et al. 2022): the victim gets the trap, everyone else
    an all-zero adapter whose next update is zero, so the next "sum" is the victim's.

What is refused or detected: a result whose values no clipped cohort could sum to is
refused (the bounds); a split result gives the parties different chained model hashes,
so the next round fails closed (the chain). What stays open: a crafted aggregate inside
the bounds and sent consistently to everyone is accepted; (a) then leaks through the
aggregate and (b) through any view that isolates one client. The leak measures run on a
toy adapter (the trap block and a LoRA pair on a linear layer), not the captioner.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from fedveil.attacks.active.secagg_round import (
    BASE_MODEL_HASH,
    Enrolment,
    default_policy,
    round_config,
    run_round,
)
from fedveil.clients.result import AggregateResult, Received, accept
from fedveil.errors import MaliciousServerError
from fedveil.proto import aggregation_pb2 as pb
from fedveil.secagg.modes import AggregationMode
from fedveil.secagg.protocol.aggregate_bounds import (
    CohortLimits,
    ValueLimits,
    secagg_value_limits,
)
from fedveil.secagg.protocol.client import ClientSession
from fedveil.secagg.protocol.config import RoundConfig
from fedveil.secagg.protocol.messages import RoundResult, ShareKeysRequest
from fedveil.secagg.protocol.model_chain import ModelChain, mean_payload_digest

VICTIM = "client-0"
LEARNING_RATE = 0.01


@dataclass(frozen=True)
class ToyAdapter:
    """The flat adapter the round aggregates: a trap block (W: bins x d_in, b: bins) and a
    LoRA pair (A: rank x d_in, B: d_out x rank) on a linear layer."""

    d_in: int = 16
    bins: int = 32
    rank: int = 4
    d_out: int = 4

    @property
    def dimension(self) -> int:
        return self.bins * self.d_in + self.bins + self.rank * self.d_in + self.d_out * self.rank

    def split(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        shapes = {
            "W": (self.bins, self.d_in),
            "b": (self.bins,),
            "A": (self.rank, self.d_in),
            "B": (self.d_out, self.rank),
        }
        out, start = {}, 0
        for name, shape in shapes.items():
            size = int(np.prod(shape))
            out[name] = np.asarray(flat[start : start + size], dtype=np.float64).reshape(shape)
            start += size
        return out

    def join(self, parts: Mapping[str, np.ndarray]) -> np.ndarray:
        zeros = self.split(np.zeros(self.dimension))
        return np.concatenate([np.ravel(parts.get(k, zeros[k])) for k in ("W", "b", "A", "B")])


@dataclass(frozen=True)
class CraftedOutcome:
    """One crafted result: refused by the bounds? detected at the next round? how much
    the attack gets from the next round's victim update and SecAgg aggregate.

    `leak_*` are the attack's own scores (imprint: share of the victim's records rebuilt;
    LoRA: |cosine| of the recovered projection with the victim's). In (c) the aggregate
    score is what the sum would give had the split not been caught.
    """

    name: str
    refused_by: str | None
    detected_by: str | None
    leak_on_victim_update: float
    leak_on_aggregate: float

    @property
    def open(self) -> bool:
        """Accepted and not detected: the crafted model reaches the next round."""
        return self.refused_by is None and self.detected_by is None


# --- the crafted models ---------------------------------------------------------------


def imprint_trap(adapter: ToyAdapter, scale: float) -> np.ndarray:
    """Every trap row points along the mean-brightness direction; biases at the quantiles
    of its value for records uniform in [0, 1]^d_in, so each record lands in one bin."""
    v = np.ones(adapter.d_in) / adapter.d_in
    std = np.sqrt(1.0 / (12.0 * adapter.d_in))
    edges = 0.5 + std * np.linspace(-2.5, 2.5, adapter.bins)
    return adapter.join({"W": scale * np.tile(v, (adapter.bins, 1)), "b": -scale * edges})


def zero_others_lora(adapter: ToyAdapter, scale: float = 0.5) -> np.ndarray:
    """A projects onto the first `rank` input coordinates, B and the trap are zero."""
    projection = np.zeros((adapter.rank, adapter.d_in))
    projection[:, : adapter.rank] = scale * np.eye(adapter.rank)
    return adapter.join({"A": projection})


# --- the next round's honest updates on a crafted model --------------------------------


def next_update(
    adapter: ToyAdapter, model: np.ndarray, records: np.ndarray, targets: np.ndarray
) -> np.ndarray:
    """-lr x the gradient an honest client computes on `model` (loss: the trap's summed
    output plus 0.5 ||B A x - t||^2 of the LoRA layer)."""
    p = adapter.split(model)
    grad = {k: np.zeros_like(v) for k, v in p.items()}
    for x, t in zip(records, targets, strict=True):
        active = (p["W"] @ x + p["b"] > 0).astype(np.float64)
        grad["W"] += np.outer(active, x)
        grad["b"] += active
        residual = p["B"] @ (p["A"] @ x) - t
        grad["B"] += np.outer(residual, p["A"] @ x)
        grad["A"] += np.outer(p["B"].T @ residual, x)
    return adapter.join({k: -LEARNING_RATE * g for k, g in grad.items()})


def imprint_recovery(adapter: ToyAdapter, update: np.ndarray, records: np.ndarray) -> float:
    """Share of `records` rebuilt (cosine > 0.999) from neighbouring trap rows of `update`
    (a single update or a weighted mean of many: the ratio is scale-free)."""
    p = adapter.split(update)
    dW = np.vstack([p["W"][:-1] - p["W"][1:], p["W"][-1:]])
    db = np.concatenate([p["b"][:-1] - p["b"][1:], p["b"][-1:]])
    keep = np.abs(db) > 1e-9 * max(1.0, float(np.max(np.abs(db), initial=0.0)))
    candidates = dW[keep] / db[keep, None]
    if candidates.shape[0] == 0:
        return 0.0
    hits = 0
    for x in records:
        cos = candidates @ x / (np.linalg.norm(candidates, axis=1) * np.linalg.norm(x) + 1e-30)
        hits += int(np.max(cos) > 0.999)
    return hits / len(records)


def lora_recovery(adapter: ToyAdapter, update: np.ndarray, record: np.ndarray) -> float:
    """|cosine| of the top right singular vector of B's update with the record's
    projection (the first `rank` coordinates)."""
    B = adapter.split(update)["B"]
    if not np.any(B):
        return 0.0
    _, _, vt = np.linalg.svd(B)
    truth = record[: adapter.rank]
    return float(abs(vt[0] @ truth) / (np.linalg.norm(truth) + 1e-30))


# --- the client's acceptance and the next round ----------------------------------------


def _received(
    config: RoundConfig, client: str, weight: int, result: RoundResult, mean: np.ndarray
) -> Received:
    """What the SecAgg driver hands `accept` (mirrors clients.secagg_driver, no DP)."""
    estimate = result.estimate
    header = pb.ResultHeader(
        round_id=config.round_id,
        survivors=list(result.survivors),
        total_weight=int(estimate.total_weight),
        dimension=config.dimension,
        error_bound=float(estimate.error_bound),
    )

    def values(survivors: int, total_weight: int) -> ValueLimits:
        return secagg_value_limits(config.quantization, config.dimension, survivors, total_weight)

    return Received(
        AggregateResult.from_header(header, np.asarray(mean, dtype=np.float64), None),
        mode=AggregationMode.SECAGG.value,
        header=header,
        payload_sha256=mean_payload_digest(np.asarray(mean, dtype=np.float64)),
        cohort=CohortLimits(
            config.round_id,
            client,
            frozenset(config.roster),
            config.threshold,
            config.quantization.max_weight,
            own_weight=weight,
        ),
        values=values,
    )


@dataclass
class _Cohort:
    adapter: ToyAdapter
    ids: list[str]
    enrolment: Enrolment
    config: RoundConfig
    weights: dict[str, int]
    chains: dict[str, ModelChain]
    records: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]


def _cohort(adapter: ToyAdapter, n: int, batch: int, seed: int, gaussian: bool) -> _Cohort:
    rng = np.random.default_rng(seed)
    ids = [f"client-{i}" for i in range(n)]

    def draw() -> np.ndarray:
        shape = (batch, adapter.d_in)
        return rng.normal(0, 1, shape) if gaussian else rng.uniform(0, 1, shape)

    return _Cohort(
        adapter=adapter,
        ids=ids,
        enrolment=Enrolment.of(ids),
        config=round_config(ids, dimension=adapter.dimension),
        weights=dict.fromkeys(ids, 1),
        chains={c: ModelChain(BASE_MODEL_HASH) for c in ids},
        records={c: draw() for c in ids},
        targets={c: rng.normal(0, 1, (batch, adapter.d_out)) for c in ids},
    )


def _first_round(cohort: _Cohort) -> RoundResult:
    """Round 1 as the clients run it honestly (small updates from a fresh adapter)."""
    rng = np.random.default_rng(len(cohort.ids))
    inputs = {c: rng.uniform(-0.1, 0.1, cohort.adapter.dimension) for c in cohort.ids}
    return run_round(cohort.config, cohort.enrolment, inputs, cohort.weights)


def _accept_all(
    cohort: _Cohort, result: RoundResult, served: Callable[[str], np.ndarray]
) -> str | None:
    """Each client's real acceptance of what the server served it; the first refusal."""
    for cid in cohort.ids:
        try:
            accept(
                _received(cohort.config, cid, cohort.weights[cid], result, served(cid)),
                cohort.chains[cid],
            )
        except MaliciousServerError as exc:
            return type(exc).__name__
    return None


def _next_round_split(cohort: _Cohort) -> str | None:
    """Round 2 with each party's own chained model hash (the server shows each the hash
    it expects): the victim checks its neighbours' advertisements."""
    configs = {
        c: round_config(
            cohort.ids,
            dimension=cohort.adapter.dimension,
            round_id=2,
            model_hash=cohort.chains[c].model_hash,
        )
        for c in cohort.ids
    }
    roster, policy = cohort.enrolment.roster, default_policy()
    sessions = {
        c: ClientSession(configs[c], c, cohort.enrolment.identities[c], roster, policy)
        for c in cohort.ids
    }
    for session in sessions.values():
        session.set_input(np.zeros(cohort.adapter.dimension), 1)
    adverts = {c: s.advertise() for c, s in sessions.items()}
    try:
        sessions[VICTIM].handle(
            ShareKeysRequest(tuple(a for c, a in adverts.items() if c != VICTIM))
        )
    except MaliciousServerError as exc:
        return type(exc).__name__
    return None


def _next_round(
    cohort: _Cohort, models: Mapping[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every client's next update on the model it was served, and the real SecAgg mean of
    them under the (common) chained model hash."""
    updates = {
        c: next_update(cohort.adapter, models[c], cohort.records[c], cohort.targets[c])
        for c in cohort.ids
    }
    announced = cohort.chains[VICTIM].model_hash
    for chain in cohort.chains.values():
        chain.check(2, announced)
    config = round_config(
        cohort.ids, dimension=cohort.adapter.dimension, round_id=2, model_hash=announced
    )
    result = run_round(config, cohort.enrolment, updates, cohort.weights)
    return updates, result.estimate.weighted_mean


def crafted_aggregate_attack(
    name: str, *, scale: float = 0.5, n: int = 3, batch: int = 2, seed: int = 0
) -> CraftedOutcome:
    """Serve crafted aggregate `name` ("imprint", "zero-others" or "inconsistent") at
    `scale` after a real round 1, run each client's real acceptance, then round 2."""
    adapter = ToyAdapter()
    gaussian = name != "imprint"
    cohort = _cohort(adapter, n, 1 if gaussian else batch, seed, gaussian)
    result = _first_round(cohort)
    if name == "imprint":
        trap = imprint_trap(adapter, scale)
        models = dict.fromkeys(cohort.ids, trap)
    elif name == "zero-others":
        models = dict.fromkeys(cohort.ids, zero_others_lora(adapter, scale))
    elif name == "inconsistent":
        models = {c: np.zeros(adapter.dimension) for c in cohort.ids}
        models[VICTIM] = zero_others_lora(adapter, scale)
    else:
        raise ValueError(f"unknown crafted aggregate {name!r}")
    # A fresh adapter is zero, so the crafted mean is the served model itself.
    refused = _accept_all(cohort, result, lambda c: models[c])
    updates = {
        c: next_update(adapter, models[c], cohort.records[c], cohort.targets[c]) for c in cohort.ids
    }
    detected: str | None = None
    if refused is not None:
        aggregate = np.mean(list(updates.values()), axis=0)  # had it been accepted
    elif name == "inconsistent":
        detected = _next_round_split(cohort)
        aggregate = np.mean(list(updates.values()), axis=0)  # had the split gone unseen
    else:
        updates, aggregate = _next_round(cohort, models)

    def score(update: np.ndarray) -> float:
        if name == "imprint":
            return imprint_recovery(adapter, update, cohort.records[VICTIM])
        return lora_recovery(adapter, update, cohort.records[VICTIM][0])

    return CraftedOutcome(
        name=name,
        refused_by=refused,
        detected_by=detected,
        leak_on_victim_update=score(updates[VICTIM]),
        leak_on_aggregate=score(aggregate),
    )
