"""The torch side of heterogeneous LoRA: a party's rank, its frozen factors, its sides.

Why a party's A is copied from a rank-max reference: apply_lora draws each A at the
party's own shape, and a (4, in) draw is not the first 4 rows of a (16, in) draw. The
padding and truncation of learner.lora.hetero_layout are only exact when every party's
A is the first r rows of the federation's rank-R A (FFA: frozen for ever; FedAvg: the
round-0 start), so each party builds the rank-R adapter on a copy of the base model and
takes its first rows.

Why alpha scales with the rank: peft multiplies B A by alpha / r. With alpha_r = alpha_R *
r / R every party's scaling is the federation's alpha_R / R, so a column of B means the
same change to the weight in every party and the per-group mean is a mean of like things.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch

from fedveil.errors import ConfigError
from fedveil.learner.lora.adapter import apply_lora, canonical_name, is_lora_a
from fedveil.learner.lora.codec import adapter_layout
from fedveil.learner.lora.config import LoraSettings
from fedveil.learner.lora.hetero_layout import HeteroLayout, Side, rank_axis, side_of


def party_settings(federation: LoraSettings, rank: int) -> LoraSettings:
    """The federation's settings at a party's `rank` (<= federation.rank), same scaling."""
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= federation.rank:
        raise ConfigError(
            f"a party's LoRA rank must be an int in [1, {federation.rank}] (the federation's "
            f"maximum), got {rank!r}"
        )
    return dataclasses.replace(
        federation, rank=rank, alpha=federation.alpha * rank / federation.rank
    )


def reference_adapter(
    base: torch.nn.Module, federation: LoraSettings, base_hash: bytes
) -> tuple[torch.nn.Module, HeteroLayout]:
    """The rank-max adapter on a copy of `base` (every side trainable) and its layout."""
    model = apply_lora(copy.deepcopy(base), federation)
    full = adapter_layout(model, base_hash, federation.variant)
    return model, HeteroLayout(full, federation.rank)


def align_to_reference(model: torch.nn.Module, reference: torch.nn.Module) -> None:
    """Set every LoRA A of `model` (rank r) to the first r rows of the reference's A."""
    theirs = {canonical_name(n): p for n, p in reference.named_parameters() if is_lora_a(n)}
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not is_lora_a(name):
                continue
            source = theirs.get(canonical_name(name))
            if source is None:
                raise ConfigError(f"{canonical_name(name)} is not in the federation's adapter")
            param.copy_(source[: param.shape[0]])


def freeze_side(model: torch.nn.Module, side: Side) -> int:
    """Stop training every LoRA tensor of `side`; the count frozen (0: no such side)."""
    frozen = 0
    for name, param in model.named_parameters():
        if "lora_" in name and side_of(canonical_name(name)) is side and param.requires_grad:
            param.requires_grad_(False)
            frozen += 1
    return frozen


def load_held(model: torch.nn.Module, layout: HeteroLayout, full_vector: np.ndarray) -> None:
    """Write the rank-max vector, truncated, into the tensors of the federation's layout
    that this party holds but does not train (a text-only party's image side), so its
    model is the global one on every side."""
    slots = {s.name: s for s in layout.full.tensors.slots}
    with torch.no_grad():
        for name, param in model.named_parameters():
            key = canonical_name(name)
            if param.requires_grad or key not in slots:
                continue
            slot = slots[key]
            block = np.asarray(full_vector[slot.offset : slot.offset + slot.size]).reshape(
                slot.shape
            )
            axis = rank_axis(key)
            cut = block[:, : param.shape[1]] if axis == 1 else block[: param.shape[0]]
            param.copy_(torch.from_numpy(np.ascontiguousarray(cut)).to(param.dtype))


def mask_gradients(model: torch.nn.Module, rank: int) -> int:
    """Train only the first `rank` rows of each LoRA A and columns of each B of a
    rank-max adapter: the other gradients are zeroed as they are computed. The count of
    tensors masked.

    Why a party would: with truncation a rank-r party never holds the columns only
    higher-rank parties train, so nothing it trains can counter them
    (benchmarks/README.md, "Heterogeneous ranks"); holding the whole global adapter and
    training r of its columns, it optimises the model the federation actually has, at
    the cost of the rank-max forward pass. Exact with Adam and no weight decay: a zero
    gradient leaves the optimiser state, hence the value, where it was. Not under DP-SGD
    (its per-sample gradients bypass the hooks)."""
    masked = 0
    for name, param in model.named_parameters():
        if "lora_" not in name or not param.requires_grad:
            continue
        axis = rank_axis(canonical_name(name))
        keep = torch.zeros_like(param)
        if axis == 0:
            keep[:rank] = 1.0
        else:
            keep[:, :rank] = 1.0
        param.register_hook(lambda grad, keep=keep: grad * keep)
        masked += 1
    return masked
