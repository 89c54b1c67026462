"""One secure round for a peft adapter trained in the caller's own loop.

Why a delta, not the weights: every party of a round starts from the same adapter (the
previous aggregate), so the server's weighted mean of the deltas, added back to that
start, is the FedAvg step; deltas are small and centred on zero, which is what the
service's clipping and fixed-point quantisation lose least on (see learner.lora.codec).

Why the dimension is checked here before anything is sent: the transport would refuse a
wrong-sized vector too, but only the learner knows that the cause is the adapter (another
rank, other target modules, another variant), so the message can say what to fix.

Only the trainable LoRA tensors travel, in the sorted canonical-name order of
learner.lora.codec (FFA-LoRA: B only; the frozen A is derived by every party from the
shared seed). Other trainable parameters (e.g. peft's modules_to_save) stay local.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
import torch

from fedveil.clients.result import AggregateResult
from fedveil.clients.transport import (
    DEFAULT_JOIN_TIMEOUT_S,
    AggregationClient,
    AsyncAggregationClient,
)
from fedveil.errors import ConfigError
from fedveil.learner.lora.adapter import is_lora_a
from fedveil.learner.lora.codec import (
    AdapterLayout,
    AdapterMismatchError,
    adapter_delta,
    adapter_layout,
    adapter_vector,
    apply_mean_delta,
)
from fedveil.learner.lora.config import AggregationVariant
from fedveil.learner.lora.hashing import base_model_hash
from fedveil.proto import aggregation_pb2 as pb
from fedveil.proto.convert_plan import plan_from_spec
from fedveil.secagg.protocol.plan import FederationPlan, plan_mismatches

AnyClient = AsyncAggregationClient | AggregationClient


@dataclass(frozen=True)
class SecureRoundResult:
    """What one round did to the adapter.

    `delta_norm` is the L2 norm of the aggregate delta that was applied; `error_bound`
    bounds, per element, how far the securely computed mean may sit from the exact
    weighted mean of the parties' (clipped) deltas (the service's quantisation).
    """

    round_id: int
    survivors: tuple[str, ...]
    total_weight: int
    delta_norm: float
    error_bound: float


def infer_layout(model: torch.nn.Module) -> AdapterLayout:
    """The adapter layout of a peft model: its base-model hash, and FFA-LoRA when every
    LoRA A is frozen (only B trains), else FedAvg of A and B."""
    lora_a = [p for name, p in model.named_parameters() if is_lora_a(name)]
    ffa = bool(lora_a) and not any(p.requires_grad for p in lora_a)
    variant = AggregationVariant.FFA if ffa else AggregationVariant.FEDAVG
    return adapter_layout(model, base_model_hash(model), variant)


class SecureRound:
    """Runs secure rounds for one peft model's adapter: delta -> aggregate -> apply.

    The round-start adapter is snapshotted on construction and after every applied
    aggregate, so a loop only trains and calls `run` (or `run_sync`); `begin()` takes a
    new snapshot when the adapter was changed outside a round (e.g. a checkpoint loaded).
    `client` is an AsyncAggregationClient (for `await run`) or the blocking
    AggregationClient (for `run_sync`; `await run` then waits in a worker thread).
    `layout` defaults to `infer_layout(model)`; pass the federation's own to have it
    checked against the model.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        client: AnyClient,
        layout: AdapterLayout | None = None,
        plan: FederationPlan | None = None,
    ) -> None:
        self.model = model
        self.client = client
        self.layout = layout if layout is not None else infer_layout(model)
        self.plan = plan
        chain_base = client.model_chain.base_model_hash
        if plan is not None:
            _check_layout_fits(self.layout, plan)
            if chain_base != plan.digest():
                raise AdapterMismatchError(
                    "the client's model chain is not rooted in the federation plan's digest; "
                    "build the client with base_model_hash=plan.digest() "
                    "(learner.federation.plan_local.local_plan)"
                )
        elif chain_base != self.layout.base_model_hash:
            raise AdapterMismatchError(
                f"the adapter belongs to base model {self.layout.base_model_hash.hex()[:16]}..., "
                f"but the client was built for {chain_base.hex()[:16]}...; pass "
                "base_model_hash=learner.lora.base_model_hash(model) to the client"
            )
        self._start = adapter_vector(model, self.layout)

    @property
    def start(self) -> np.ndarray:
        """A copy of the round-start adapter (float32, in layout order)."""
        return self._start.copy()

    def begin(self) -> None:
        """Snapshot the adapter as it is now: the next delta is taken against it."""
        self._start = adapter_vector(self.model, self.layout)

    def delta(self) -> np.ndarray:
        """The update this party would send now: current adapter minus round start."""
        return adapter_delta(self.model, self.layout, self._start)

    def check_spec(self, spec: pb.RoundSpec) -> None:
        """Refuse a round whose plan differs from this party's (naming each field), or
        whose vectors do not have this adapter's size."""
        served = plan_from_spec(spec)
        if served is not None and self.plan is None:
            raise AdapterMismatchError(
                f"round {spec.round_id} belongs to federation {served.name!r}, which serves "
                "a plan: build SecureRound with plan=learner.federation.plan_local.local_plan"
                "(...) and the client with base_model_hash=plan.digest()"
            )
        if served is not None and self.plan is not None:
            differ = plan_mismatches(served, self.plan)
            if differ:
                raise AdapterMismatchError(
                    f"round {spec.round_id} of federation {served.name!r} needs another model "
                    f"or adapter than this party holds: {'; '.join(differ)}"
                )
        if int(spec.dimension) != self.layout.size:
            raise AdapterMismatchError(
                f"this adapter has {self.layout.size} trainable values, but round "
                f"{spec.round_id} aggregates {spec.dimension}; build the adapter with the "
                "federation's LoRA settings (rank, target modules, variant)"
            )

    async def run(
        self, weight: int, *, join_timeout_s: float = DEFAULT_JOIN_TIMEOUT_S
    ) -> SecureRoundResult:
        """Send this party's delta with `weight` (its example count), apply the aggregate.

        A round that fails leaves the model and the round start as they were, so calling
        again sends the same delta (plus whatever was trained in between)."""
        _check_weight(weight)
        client = self.client
        if isinstance(client, AggregationClient):
            return await asyncio.to_thread(self.run_sync, weight, join_timeout_s=join_timeout_s)
        delta = self.delta()
        info = await client.wait_for_round(timeout_s=join_timeout_s)
        self.check_spec(info.spec)
        result = await client.run_round(delta, weight, join_timeout_s=join_timeout_s)
        return self._apply(result)

    def run_sync(
        self, weight: int, *, join_timeout_s: float = DEFAULT_JOIN_TIMEOUT_S
    ) -> SecureRoundResult:
        """`run` for a blocking AggregationClient (works inside a running event loop too)."""
        _check_weight(weight)
        client = self.client
        if not isinstance(client, AggregationClient):
            raise ConfigError(
                "run_sync needs the blocking AggregationClient; with an "
                "AsyncAggregationClient, `await secure_round.run(weight)` instead"
            )
        delta = self.delta()
        self.check_spec(client.wait_for_round(timeout_s=join_timeout_s).spec)
        result = client.run_round(delta, weight, join_timeout_s=join_timeout_s)
        return self._apply(result)

    def apply_result(self, result: AggregateResult) -> SecureRoundResult:
        """Apply a result fetched outside `run` (a missed round's, learner.federation.
        rejoin): the adapter becomes the round start plus its mean, as after a round."""
        return self._apply(result)

    def _apply(self, result: AggregateResult) -> SecureRoundResult:
        mean = np.asarray(result.weighted_mean, dtype=np.float64)
        self._start = apply_mean_delta(self.model, self.layout, self._start, mean)
        return SecureRoundResult(
            round_id=result.round_id,
            survivors=result.survivors,
            total_weight=result.total_weight,
            delta_norm=float(np.linalg.norm(mean)),
            error_bound=result.error_bound,
        )


def _check_layout_fits(layout: AdapterLayout, plan: FederationPlan) -> None:
    """The model's adapter must be the plan's: same base model, size and layout."""
    if layout.base_model_hash != plan.base_model_hash:
        raise AdapterMismatchError(
            f"the model's base weights hash to {layout.base_model_hash.hex()[:16]}..., but "
            f"the plan's base model {plan.base_model!r} to {plan.base_model_hash.hex()[:16]}..."
        )
    if layout.size != plan.dimension or layout.fingerprint() != plan.layout_sha256:
        raise AdapterMismatchError(
            f"the model's adapter ({layout.size} values) is not the plan's ({plan.dimension} "
            "values, its layout): apply the plan's LoRA settings (rank, target modules, "
            "variant, seed)"
        )


def _check_weight(weight: int) -> None:
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
        raise ConfigError(
            f"weight must be a positive int (the examples trained on this round), got {weight!r}"
        )
