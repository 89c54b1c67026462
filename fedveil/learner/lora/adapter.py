"""Wrapping a base model with peft LoRA, initialised identically in every party.

Why re-initialise A ourselves: peft draws A from torch's global generator, so two parties
would start round 0 from different adapters, and FFA-LoRA's frozen A would differ between
parties, which breaks the exactness it exists for. Here each A is drawn from a generator
seeded by (shared seed, tensor name): the same in every process, whatever ran before.
B starts at zero (peft's default), so a fresh adapter leaves the base model unchanged.
"""

from __future__ import annotations

import hashlib
import math
import re
import warnings

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from fedveil.learner.lora.config import AggregationVariant, LoraSettings, default_target_modules

_PEFT_PREFIX = re.compile(r"^base_model\.model\.")
_ADAPTER_NAME = re.compile(r"\.default(?=\.)")


def canonical_name(name: str) -> str:
    """A peft parameter name without the wrapper prefix and adapter name.

    `base_model.model.decoder.h.0.attn.c_attn.lora_A.default.weight` becomes
    `decoder.h.0.attn.c_attn.lora_A.weight`: the layout then reads the same whatever peft
    version or adapter name produced it.
    """
    return _ADAPTER_NAME.sub("", _PEFT_PREFIX.sub("", name))


def _name_seed(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"fedveil-lora-init:{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def is_lora_a(name: str) -> bool:
    return ".lora_A." in name or ".lora_embedding_A." in name


def apply_lora(model: torch.nn.Module, settings: LoraSettings) -> PeftModel:
    """The model with LoRA adapters; base weights frozen, A seeded, FFA's A frozen too."""
    targets = settings.target_modules or default_target_modules(model)
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,  # type: ignore[arg-type]  # peft accepts floats
        lora_dropout=settings.dropout,
        target_modules=list(targets),
        bias="none",
    )
    with warnings.catch_warnings():
        # ViT layers are nn.Linear and GPT-2's are Conv1D; peft picks the right layout per
        # module and warns about each one. Nothing to act on here.
        warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if not is_lora_a(name):
                continue
            generator = torch.Generator().manual_seed(
                _name_seed(settings.seed, canonical_name(name))
            )
            # peft's own default for A: kaiming-uniform with a = sqrt(5).
            torch.nn.init.kaiming_uniform_(param, a=math.sqrt(5), generator=generator)
            if settings.variant is AggregationVariant.FFA:
                param.requires_grad_(False)
    return peft_model
