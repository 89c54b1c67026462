"""The federation plan as a party derives it from what it holds (model, LoRA, layout).

Why the same function for the operator and the parties: `fedveil plan` writes the plan
from the base model, and each party rebuilds it from its own copy of the base model and
its own adapter settings; both must compute every field the same way (the base model
hash over the weights, the target modules as peft resolved them, the layout
fingerprint), or honest parties would be refused. Only the federation's name, the base
model's display name and the number of rounds are taken from the served plan: they
describe the federation, not what a party holds, and they are bound into the digest all
the same.
"""

from __future__ import annotations

import torch

from fedveil.learner.lora.codec import AdapterLayout
from fedveil.learner.lora.config import LoraSettings
from fedveil.secagg.protocol.plan import AdapterPlan, FederationPlan


def resolved_target_modules(model: torch.nn.Module) -> tuple[str, ...]:
    """The module names peft applied LoRA to (sorted), from the peft model's config."""
    configs = getattr(model, "peft_config", None)
    if not configs:
        raise TypeError("the model is not a peft model (apply_lora first)")
    targets = next(iter(configs.values())).target_modules
    if isinstance(targets, str):
        return (targets,)
    return tuple(sorted(targets))


def adapter_plan(model: torch.nn.Module, lora: LoraSettings) -> AdapterPlan:
    return AdapterPlan(
        rank=lora.rank,
        alpha=lora.alpha,
        target_modules=resolved_target_modules(model),
        variant=lora.variant.value,
        seed=lora.seed,
    )


def local_plan(
    model: torch.nn.Module,
    layout: AdapterLayout,
    lora: LoraSettings,
    *,
    name: str,
    base_model: str,
    rounds: int,
) -> FederationPlan:
    """The plan this model (with LoRA applied as `lora`) and its `layout` belong to."""
    return FederationPlan(
        name=name,
        base_model=base_model,
        base_model_hash=layout.base_model_hash,
        lora=adapter_plan(model, lora),
        dimension=layout.size,
        layout_sha256=layout.fingerprint(),
        rounds=rounds,
    )
