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

from fedveil.errors import ConfigError
from fedveil.learner.lora.codec import AdapterLayout
from fedveil.learner.lora.config import LoraSettings
from fedveil.learner.lora.hetero_layout import HeteroLayout
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


def adapter_plan(
    model: torch.nn.Module, lora: LoraSettings, *, heterogeneous: bool = False
) -> AdapterPlan:
    return AdapterPlan(
        rank=lora.rank,
        alpha=lora.alpha,
        target_modules=resolved_target_modules(model),
        variant=lora.variant.value,
        seed=lora.seed,
        heterogeneous=heterogeneous,
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


def local_hetero_plan(
    model: torch.nn.Module,
    hetero: HeteroLayout,
    federation: LoraSettings,
    *,
    name: str,
    base_model: str,
    rounds: int,
) -> FederationPlan:
    """The plan of a heterogeneous federation, the same from every party whatever its own
    rank or towers: `federation` is the rank-max settings (rank = the maximum, its alpha),
    `hetero` the extended layout (learner.lora.hetero_layout), `model` any party's peft
    model (only its resolved target modules are read, and they do not depend on rank)."""
    if federation.rank != hetero.max_rank:
        raise ConfigError(
            f"the federation's rank {federation.rank} is not the layout's maximum {hetero.max_rank}"
        )
    return FederationPlan(
        name=name,
        base_model=base_model,
        base_model_hash=hetero.full.base_model_hash,
        lora=adapter_plan(model, federation, heterogeneous=True),
        dimension=hetero.size,
        layout_sha256=hetero.fingerprint(),
        rounds=rounds,
    )
