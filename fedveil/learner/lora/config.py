"""LoRA settings and the per-architecture default target modules.

Why the aggregation variant lives here: it changes what a party trains (FFA-LoRA freezes
A) and therefore what the update holds, so it must be fixed before the adapter is built
and be the same for every party of a run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import torch

from fedveil.errors import ConfigError


class AggregationVariant(StrEnum):
    """How the parties' adapters are combined (see `learner.lora.aggregation`).

    FEDAVG: A and B are both trained and averaged separately. The mean of the products is
    not the product of the means, so the aggregate is only an approximation of the mean
    of the parties' weight updates.
    FFA: FFA-LoRA. A is frozen at a value every party derives from the shared seed; only
    B is trained and sent, and mean(B_i) A = mean(B_i A) exactly. The upload shrinks too
    (23,544 instead of 42,744 values for the built-in captioner), and on the captioner
    federation (same data, rounds and budget) it learns far more than FEDAVG
    (benchmarks/README.md, "Recipe choices"). The default.
    """

    FEDAVG = "fedavg"
    FFA = "ffa"


@dataclass(frozen=True)
class LoraSettings:
    """What peft's LoraConfig needs, plus the variant and the shared initialisation seed.

    target_modules: module-name suffixes; None picks `default_target_modules(model)`.
    seed: every party derives the initial A (and, for FFA, the frozen A) from it, so all
    parties start round 0 from the identical adapter without exchanging it.
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None
    variant: AggregationVariant = AggregationVariant.FFA
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.rank, int) or not 1 <= self.rank <= 1024:
            raise ConfigError(f"rank must be an int in [1, 1024], got {self.rank!r}")
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ConfigError(f"alpha must be positive and finite, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.target_modules is not None:
            modules = tuple(self.target_modules)
            if not modules or any(not isinstance(m, str) or not m for m in modules):
                raise ConfigError(
                    f"target_modules must be non-empty names or None, got {self.target_modules!r}"
                )
            object.__setattr__(self, "target_modules", modules)
        try:
            object.__setattr__(self, "variant", AggregationVariant(self.variant))
        except ValueError:
            raise ConfigError(
                f"variant must be one of {[v.value for v in AggregationVariant]}, "
                f"got {self.variant!r}"
            ) from None
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative int, got {self.seed!r}")

    @property
    def scaling(self) -> float:
        """peft's alpha / rank: the update to a weight is scaling * B A."""
        return self.alpha / self.rank


# Leaf-module names per architecture family, in the order peft is given them.
_VIT_ENCODER = ("q_proj", "v_proj", "query", "value")
_GPT2 = ("c_attn", "q_attn", "c_proj", "c_fc")
_LLAMA = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_CAPTIONER_HEAD = ("lm_head",)
"""The captioner's output head is adapted too: the domain words never appeared as targets
in pretraining, so their (tied) output embeddings sit where the softmax pushed them, away
from every hidden state; a low-rank term on the head lets a party raise them cheaply."""


def _leaf_names(model: torch.nn.Module) -> set[str]:
    return {name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name}


def default_target_modules(model: torch.nn.Module) -> tuple[str, ...]:
    """Sensible LoRA targets for the model's architecture (attention, MLP, head).

    ViT + GPT-2 vision-encoder-decoder: encoder query/value, every decoder projection
    (self-attention, cross-attention, MLP) and the LM head. GPT-2 causal LMs: c_attn,
    c_proj, c_fc. LLaMA-like causal LMs: q/k/v/o and the gated MLP projections. Anything
    else: every linear layer (peft's "all-linear" choice), spelled out by name.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", "")
    leaves = _leaf_names(model)
    if model_type == "vision-encoder-decoder":
        wanted: Sequence[str] = (*_VIT_ENCODER, *_GPT2, *_CAPTIONER_HEAD)
    elif model_type == "gpt2" or {"c_attn", "c_fc"} <= leaves:
        wanted = _GPT2
    elif {"q_proj", "v_proj", "up_proj"} <= leaves:
        wanted = _LLAMA
    else:
        wanted = sorted(
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head")
        )
    chosen = tuple(dict.fromkeys(n for n in wanted if n in leaves))
    if not chosen:
        raise ConfigError(
            f"no LoRA target found in a {model_type or type(model).__name__} model; "
            "pass LoraSettings(target_modules=...)"
        )
    return chosen
