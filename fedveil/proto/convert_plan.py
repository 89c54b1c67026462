"""The federation plan on the wire: secagg.protocol.plan <-> pb.FederationPlan.

Why its own module: the plan travels inside every RoundSpec of every mode, so neither the
SecAgg nor the CKKS translation owns it; like the rest of the translation layer, a
malformed plan from the wire becomes the plan's own ConfigError, never a half-built value.
"""

from __future__ import annotations

from fedveil.proto import aggregation_pb2 as pb
from fedveil.secagg.protocol.plan import AdapterPlan, FederationPlan


def plan_to_pb(plan: FederationPlan) -> pb.FederationPlan:
    lora = plan.lora
    return pb.FederationPlan(
        name=plan.name,
        base_model=plan.base_model,
        base_model_hash=plan.base_model_hash,
        lora=pb.LoraPlan(
            rank=lora.rank,
            alpha=lora.alpha,
            target_modules=list(lora.target_modules),
            variant=lora.variant,
            seed=lora.seed,
            heterogeneous=lora.heterogeneous,
        ),
        dimension=plan.dimension,
        layout_sha256=plan.layout_sha256,
        rounds=plan.rounds,
    )


def plan_from_spec(spec: pb.RoundSpec) -> FederationPlan | None:
    """The plan a round serves, or None when its server runs without one."""
    if not spec.HasField("plan"):
        return None
    msg = spec.plan
    lora = msg.lora
    return FederationPlan(
        name=msg.name,
        base_model=msg.base_model,
        base_model_hash=bytes(msg.base_model_hash),
        lora=AdapterPlan(
            rank=int(lora.rank),
            alpha=float(lora.alpha),
            target_modules=tuple(lora.target_modules),
            variant=lora.variant,
            seed=int(lora.seed),
            heterogeneous=bool(lora.heterogeneous),
        ),
        dimension=int(msg.dimension),
        layout_sha256=bytes(msg.layout_sha256),
        rounds=int(msg.rounds),
    )
