"""The base-model hash: which frozen weights an adapter belongs to.

Why: an adapter trained on one base model is noise on another. The hash is bound into the
SecAgg session id (`RoundConfig.model_hash`), so parties holding different base models
fail a round closed instead of averaging incompatible updates.

Why this canonical form: SHA-256 over (name, dtype, shape, raw bytes) of every tensor of
the state dict in sorted-name order, with LoRA tensors left out and peft's wrapper names
undone, so the hash is the same before and after `apply_lora`, after a save and load, and
on every machine.
"""

from __future__ import annotations

import hashlib

import torch

from fedveil.learner.lora.adapter import canonical_name

HASH_TAG = b"fedveil-base-model-v1"


def _canonical_base_name(name: str) -> str | None:
    if ".lora_" in name or "lora_" in name.rsplit(".", 1)[-1]:
        return None
    return canonical_name(name).replace(".base_layer.", ".")


def base_model_hash(model: torch.nn.Module) -> bytes:
    """32-byte SHA-256 of the model's base weights (LoRA tensors excluded)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        canonical = _canonical_base_name(name)
        if canonical is not None:
            tensors[canonical] = tensor
    hasher = hashlib.sha256(HASH_TAG)
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        header = f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode()
        hasher.update(len(header).to_bytes(4, "little") + header)
        raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        hasher.update(len(raw).to_bytes(8, "little") + raw)
    return hasher.digest()
