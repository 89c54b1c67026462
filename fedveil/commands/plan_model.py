"""The learner side of `fedveil plan`: load the base model, apply the LoRA, derive the plan.

Why a module of its own: it imports torch, so `commands.plan` imports it inside `run`
and `fedveil` starts without the training stack.
"""

from __future__ import annotations

from pathlib import Path

from fedveil.learner.federation.plan_local import local_plan
from fedveil.learner.lora import adapter_layout, apply_lora, base_model_hash
from fedveil.learner.lora.config import AggregationVariant, LoraSettings
from fedveil.learner.models.loading import load_model
from fedveil.secagg.protocol.plan import FederationPlan


def plan_from_model(
    model_dir: Path,
    *,
    name: str,
    rounds: int,
    rank: int,
    alpha: float,
    target_modules: tuple[str, ...] | None,
    variant: str,
    seed: int,
) -> FederationPlan:
    """The plan of a federation on the model in `model_dir` with this LoRA adapter."""
    lora = LoraSettings(
        rank=rank,
        alpha=alpha,
        target_modules=target_modules,
        variant=AggregationVariant(variant),
        seed=seed,
    )
    loaded = load_model(model_dir)
    base = base_model_hash(loaded.model)
    model = apply_lora(loaded.model, lora)
    layout = adapter_layout(model, base, lora.variant)
    return local_plan(
        model, layout, lora, name=name, base_model=Path(model_dir).resolve().name, rounds=rounds
    )
