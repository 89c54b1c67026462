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

Heterogeneous federations (`hetero=`): the party trains its own rank (and maybe only the
text tower) but holds the federation's rank-max global adapter; it sends its delta
extended to the rank-max layout with its indicator (learner.lora.hetero_layout), decodes
the per-group mean, moves the global adapter and loads it back cut to its own rank.
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
from fedveil.learner.lora.hetero_layout import HeteroLayout, PartyShape
from fedveil.learner.lora.hetero_party import load_held
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
    checked against the model. `hetero`: the federation's extended layout, with
    `hetero_start` the rank-max global adapter this party starts from (default: the
    party's adapter padded, right for FFA-LoRA whose B starts at zero; FedAvg parties pass
    the rank-max reference's start, learner.lora.hetero_party.reference_adapter);
    `hetero_shape` what the party trains when its model holds more (the whole rank-max
    adapter with masked gradients, learner.lora.hetero_party.mask_gradients).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        client: AnyClient,
        layout: AdapterLayout | None = None,
        plan: FederationPlan | None = None,
        *,
        hetero: HeteroLayout | None = None,
        hetero_start: np.ndarray | None = None,
        hetero_shape: PartyShape | None = None,
    ) -> None:
        self.model = model
        self.client = client
        self.layout = layout if layout is not None else infer_layout(model)
        self.plan = plan
        self.hetero = hetero
        self.hetero_shape = hetero_shape
        self._global: np.ndarray | None = None
        if hetero is not None:
            hetero.party_shape(self.layout)  # refuses an adapter that is no truncation
            own = adapter_vector(model, self.layout)
            start = hetero.pad(self.layout, own) if hetero_start is None else hetero_start
            self._global = np.asarray(start, dtype=np.float32).copy()
            if not np.array_equal(hetero.truncate(self.layout, self._global), own):
                raise AdapterMismatchError(
                    "the party's adapter is not the federation's rank-max start cut to its "
                    "rank; align it (learner.lora.hetero_party.align_to_reference)"
                )
        chain_base = client.model_chain.base_model_hash
        if plan is not None:
            _check_layout_fits(self.layout, plan, hetero)
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
        """The update this party would send now: current adapter minus round start (with
        `hetero`: extended to the rank-max layout with the party's indicator)."""
        delta = adapter_delta(self.model, self.layout, self._start)
        if self.hetero is None:
            return delta
        return self.hetero.extend(self.layout, delta, self.hetero_shape)

    @property
    def size(self) -> int:
        """Values this party sends per round."""
        return self.layout.size if self.hetero is None else self.hetero.size

    @property
    def global_vector(self) -> np.ndarray:
        """The global adapter as this party holds it: rank-max with `hetero`, else its own."""
        return self.start if self._global is None else self._global.copy()

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
        if int(spec.dimension) != self.size:
            raise AdapterMismatchError(
                f"this adapter has {self.size} trainable values, but round "
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
        if self.hetero is not None and self._global is not None:
            mean = self.hetero.decode(mean, result.error_bound).values
            self._global = (self._global.astype(np.float64) + mean).astype(np.float32)
            own = self.hetero.truncate(self.layout, self._global)
            self._start = apply_mean_delta(
                self.model, self.layout, self._start, own.astype(np.float64) - self._start
            )
            load_held(self.model, self.hetero, self._global)
        else:
            self._start = apply_mean_delta(self.model, self.layout, self._start, mean)
        return SecureRoundResult(
            round_id=result.round_id,
            survivors=result.survivors,
            total_weight=result.total_weight,
            delta_norm=float(np.linalg.norm(mean)),
            error_bound=result.error_bound,
        )


def _check_layout_fits(
    layout: AdapterLayout, plan: FederationPlan, hetero: HeteroLayout | None = None
) -> None:
    """The model's adapter must be the plan's: same base model, size and layout (with
    `hetero`: the extended layout's, and a plan that says it is heterogeneous)."""
    if hetero is not None or plan.lora.heterogeneous:
        if hetero is None or not plan.lora.heterogeneous:
            raise AdapterMismatchError(
                "the federation's plan and this party disagree on heterogeneous ranks: "
                f"plan heterogeneous={plan.lora.heterogeneous}, party "
                f"{'heterogeneous' if hetero is not None else 'uniform'}"
            )
        if hetero.size != plan.dimension or hetero.fingerprint() != plan.layout_sha256:
            raise AdapterMismatchError(
                f"the party's extended layout ({hetero.size} values) is not the plan's "
                f"({plan.dimension}): build it at the plan's maximum rank {plan.lora.rank} "
                "with the plan's target modules, variant and seed"
            )
        if hetero.max_rank != plan.lora.rank:
            raise AdapterMismatchError(
                f"the party's maximum rank {hetero.max_rank} is not the plan's {plan.lora.rank}"
            )
        layout = hetero.full
    if layout.base_model_hash != plan.base_model_hash:
        raise AdapterMismatchError(
            f"the model's base weights hash to {layout.base_model_hash.hex()[:16]}..., but "
            f"the plan's base model {plan.base_model!r} to {plan.base_model_hash.hex()[:16]}..."
        )
    if hetero is None and (
        layout.size != plan.dimension or layout.fingerprint() != plan.layout_sha256
    ):
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
