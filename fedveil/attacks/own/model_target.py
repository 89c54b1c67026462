"""A team's base model with its adapter, as the update attacks need it.

Why rebuild the adapter rather than read one: the attacker is the server, who knows the
base model and the adapter settings (the plan) and, through the shared seed, FFA-LoRA's
frozen A; `learner.lora.apply_lora` derives exactly what every party derived. The delta
is then laid out over the adapted model's trainable parameters (peft's names, which the
attack targets use) and checked against their canonical names (what a party's file is
keyed by).

What applies: token recovery (DAGER) needs a GPT-2-style decoder whose block 0
attention projection is adapted (its input is ln_1(wte[token] + wpe[position]), so every
candidate input can be listed: the captioner's decoder and GPT-2 causal LMs); the token
bag needs an adapted LM head. Anything else is reported as not applicable, with why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fedveil.attacks.own.lora_source import AdapterSource
from fedveil.attacks.targets.tiny_lm import gpt2_block0_inputs
from fedveil.attacks.update.base import (
    LocalTraining,
    ObservedUpdate,
    ParameterLayout,
    TokenTarget,
    UpdateKind,
)
from fedveil.attacks.update.token_bag import HEAD_SUFFIX
from fedveil.errors import ConfigError
from fedveil.learner.lora import adapter_layout, apply_lora, base_model_hash, canonical_name
from fedveil.learner.models.loading import LoadedModel, ModelKind, ModelLoadError, load_model

DEFAULT_MAX_LENGTH = 32
"""Positions tried by token recovery when no record says how long the texts are."""


@dataclass(eq=False)
class OwnModel:
    """The adapted model, its trainable layout, and what the attacks can use of it."""

    loaded: LoadedModel
    model: nn.Module
    layout: ParameterLayout
    base_hash: bytes
    canonical: dict[str, str]
    """peft parameter name -> canonical name, for every trainable adapter tensor."""
    frozen: dict[str, tuple[int, ...]]
    """canonical name -> shape of the adapter tensors that do not train."""
    source: AdapterSource

    @property
    def kind(self) -> ModelKind:
        return self.loaded.kind

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer

    def expected(self) -> dict[str, tuple[int, ...]]:
        """canonical name -> shape, what a delta file must hold."""
        shapes = dict(zip(self.layout.names, self.layout.shapes, strict=True))
        return {self.canonical[n]: shapes[n] for n in self.layout.names}

    def observe(self, tensors: Mapping[str, Tensor], *, clients: int = 1) -> ObservedUpdate:
        """A delta (canonical name -> tensor) as the flat view the attacks take.

        The local recipe is unknown to this command and unused by the attacks it runs
        (the span and row structures hold for any number of SGD steps); LocalTraining()
        only labels the view as a delta.
        """
        flat = ParameterLayout.flatten([tensors[self.canonical[n]] for n in self.layout.names])
        return ObservedUpdate(
            flat.to(torch.float64),
            self.layout,
            kind=UpdateKind.DELTA,
            n_clients=clients,
            training=LocalTraining(),
        )

    def token_target(self, max_length: int | None) -> tuple[TokenTarget | None, str]:
        """DAGER's target over the first adapted decoder layer, or None and why not."""
        transformer, prefix = _gpt2_transformer(self.model)
        if transformer is None:
            return None, (
                "token recovery lists every input of the first adapted layer, which needs a "
                "GPT-2-style decoder (wte, wpe, h.0.ln_1); this model has none"
            )
        lora_a = f"{prefix}.h.0.attn.c_attn.lora_A.default.weight"
        names = dict(self.model.named_parameters())
        if lora_a not in names:
            return None, (
                "token recovery reads the LoRA factors of the decoder's block 0 attention "
                "projection (c_attn); the adapter does not target it"
            )
        positions = _positions(transformer)
        length = min(max_length or DEFAULT_MAX_LENGTH, positions)
        pad = self.tokenizer.pad_token_id
        vocab = _rows(transformer, "wte")
        token_ids = torch.tensor([i for i in range(vocab) if i != pad])

        def candidates() -> tuple[Tensor, Tensor]:
            return gpt2_block0_inputs(transformer, token_ids, length)

        eos = None if self.kind is ModelKind.CAPTIONER else self.tokenizer.eos_token_id
        target = TokenTarget(
            name=f"{self.loaded.path.name}-block0",
            model=self.model,
            lora_a=lora_a,
            lora_b=lora_a.replace("lora_A", "lora_B"),
            candidates=candidates,
            max_length=length,
            eos_id=eos,
            pad_id=pad,
        )
        return target, ""

    def head_applies(self) -> tuple[bool, str]:
        """Whether the adapter trains exactly one LM-head B factor (the token bag's rows)."""
        found = [n for n in self.layout.names if HEAD_SUFFIX in n]
        if len(found) == 1:
            return True, ""
        return False, (
            f"the token bag reads the LM head's LoRA B rows; the adapter trains {len(found)} "
            "(add lm_head to the target modules to measure it)"
        )


def load_own_model(model_dir: Path, source: AdapterSource, *, key: str = "--model-dir") -> OwnModel:
    """Load `model_dir` offline, apply the adapter, check it against a plan if given;
    `key` is how the caller spells the model option in its errors."""
    if not model_dir.is_dir():
        raise ConfigError(
            f"{key} {str(model_dir)!r} is not a local model directory; fedveil never "
            "downloads models (a Hub name is refused): save the model with save_pretrained "
            "and pass that directory"
        )
    try:
        loaded = load_model(model_dir)
    except ModelLoadError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"{key} {model_dir}: cannot load the model and its tokenizer ({exc})"
        ) from None
    base = base_model_hash(loaded.model)
    plan = source.plan
    if plan is not None and plan.base_model_hash != base:
        raise ConfigError(
            f"{key} {model_dir} hashes to {base.hex()[:16]}..., the plan {plan.source} "
            f"binds base model {plan.base_model_hash.hex()[:16]}...: pass the federation's "
            "base model"
        )
    try:
        model = apply_lora(loaded.model, source.settings)
    except ValueError as exc:
        raise ConfigError(f"the adapter ({source.origin}) does not fit the model: {exc}") from None
    if plan is not None:
        fingerprint = adapter_layout(model, base, source.settings.variant).fingerprint()
        if fingerprint != plan.layout_sha256:
            raise ConfigError(
                f"the adapter built from {plan.source} on this model has layout "
                f"{fingerprint.hex()[:16]}..., the plan says {plan.layout_sha256.hex()[:16]}..."
            )
    model.eval()
    layout = ParameterLayout.of(model)
    canonical = {n: canonical_name(n) for n in layout.names}
    frozen = {
        canonical_name(n): tuple(p.shape)
        for n, p in model.named_parameters()
        if not p.requires_grad and "lora_" in n
    }
    return OwnModel(loaded, model, layout, base, canonical, frozen, source)


def _gpt2_transformer(model: nn.Module) -> tuple[nn.Module | None, str]:
    for name, module in model.named_modules():
        if all(hasattr(module, a) for a in ("wte", "wpe", "h")):
            try:
                module.get_submodule("h.0.ln_1")
            except AttributeError:
                continue
            return module, name
    return None, ""


def _rows(transformer: nn.Module, embedding: str) -> int:
    module = transformer.get_submodule(embedding)
    assert isinstance(module, nn.Embedding)
    return int(module.weight.shape[0])


def _positions(transformer: nn.Module) -> int:
    return _rows(transformer, "wpe")
