"""Adapter <-> flat vector: what a party uploads and how an aggregate is applied.

Why only the trainable adapter tensors: they are all that changes in a round, so they are
all that travels (FFA-LoRA's frozen A never leaves the party; every party derives it).

Why the update is a delta (trained minus round-start adapter), not the weights: the
server's weighted mean of deltas, added to the round-start adapter every party holds, is
the same FedAvg step as averaging weights; but deltas are small and centred on zero, so
clipping and fixed-point quantisation (secagg.quantize) lose far less, client-level DP
clips exactly the quantity it must bound, and frozen entries are exact zeros.

Exactness: `adapter_vector` / `load_adapter_vector` copy float32 values bit for bit. A
delta is one float32 subtraction and is added back in float64, so a party that applies its
own delta (a cohort of one) recovers each trained value to within half a float32 ulp of
the delta (plus the final rounding to float32): far below what the quantised secure sum
keeps anyway.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from fedveil.clients.streams import TensorLayout, TensorSlot
from fedveil.errors import ConfigError
from fedveil.learner.lora.adapter import canonical_name
from fedveil.learner.lora.config import AggregationVariant


class AdapterMismatchError(ConfigError):
    """An update or aggregate does not fit this adapter (size, layout or base model)."""


@dataclass(frozen=True)
class AdapterLayout:
    """Where each trainable adapter tensor sits in the flat update, and for which base.

    `tensors` is the transport's own TensorLayout (sorted canonical names, end to end), so
    it can be published in a RoundSpec unchanged.
    """

    tensors: TensorLayout
    base_model_hash: bytes
    variant: AggregationVariant
    frozen_digest: bytes = b""
    """SHA-256 of the frozen adapter tensors (FFA-LoRA's A): they never travel, so parties
    must agree on them by construction; comparing digests checks that they do."""

    def __post_init__(self) -> None:
        if len(self.base_model_hash) != 32:
            raise ConfigError(
                f"base_model_hash must be 32 bytes (SHA-256), got {len(self.base_model_hash)}"
            )

    @property
    def size(self) -> int:
        return self.tensors.size

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(slot.name for slot in self.tensors.slots)

    def fingerprint(self) -> bytes:
        """SHA-256 of names, shapes, offsets, variant, frozen A and base hash: equal iff
        the updates of two parties can be averaged."""
        hasher = hashlib.sha256(b"fedveil-adapter-layout-v1")
        hasher.update(self.base_model_hash)
        hasher.update(self.variant.value.encode())
        hasher.update(self.frozen_digest)
        for slot in self.tensors.slots:
            hasher.update(f"{slot.name}|{slot.shape}|{slot.offset};".encode())
        return hasher.digest()


def _trainable_adapter(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    found = {
        canonical_name(name): param
        for name, param in model.named_parameters()
        if param.requires_grad and "lora_" in name
    }
    if not found:
        raise ConfigError("the model has no trainable LoRA tensors; call apply_lora first")
    return found


def adapter_layout(
    model: torch.nn.Module, base_hash: bytes, variant: AggregationVariant
) -> AdapterLayout:
    """The layout of the model's trainable adapter tensors, in sorted-name order."""
    params = _trainable_adapter(model)
    slots, offset = [], 0
    for name in sorted(params):
        shape = tuple(int(d) for d in params[name].shape)
        slots.append(TensorSlot(name, shape, offset))
        offset += int(np.prod(shape, dtype=np.int64))
    return AdapterLayout(
        TensorLayout(tuple(slots)), base_hash, AggregationVariant(variant), _frozen_digest(model)
    )


def _frozen_digest(model: torch.nn.Module) -> bytes:
    hasher = hashlib.sha256(b"fedveil-frozen-adapter-v1")
    frozen = {
        canonical_name(name): param
        for name, param in model.named_parameters()
        if not param.requires_grad and "lora_" in name
    }
    for name in sorted(frozen):
        tensor = frozen[name].detach().cpu().contiguous()
        hasher.update(f"{name}|{tuple(tensor.shape)};".encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return hasher.digest()


def _params_for(model: torch.nn.Module, layout: AdapterLayout) -> dict[str, torch.nn.Parameter]:
    params = _trainable_adapter(model)
    ours = {n: tuple(int(d) for d in p.shape) for n, p in params.items()}
    theirs = {s.name: tuple(s.shape) for s in layout.tensors.slots}
    if ours != theirs:
        missing = sorted(set(theirs) - set(ours))[:3]
        extra = sorted(set(ours) - set(theirs))[:3]
        raise AdapterMismatchError(
            f"the model's trainable adapter does not match the layout (missing {missing}, "
            f"unexpected {extra}, or shapes differ); build both with the same LoraSettings"
        )
    return params


def adapter_vector(model: torch.nn.Module, layout: AdapterLayout) -> np.ndarray:
    """The trainable adapter tensors as one float32 vector (bit-exact copy)."""
    params = _params_for(model, layout)
    flat = np.empty(layout.size, dtype=np.float32)
    for slot in layout.tensors.slots:
        value = params[slot.name].detach().cpu().to(torch.float32).reshape(-1).numpy()
        flat[slot.offset : slot.offset + slot.size] = value
    return flat


def _checked(vector: np.ndarray, layout: AdapterLayout, what: str) -> np.ndarray:
    array = np.asarray(vector)
    if array.ndim != 1 or array.shape[0] != layout.size:
        raise AdapterMismatchError(
            f"{what} has shape {array.shape}, the adapter layout needs ({layout.size},)"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise AdapterMismatchError(f"{what} must be floating point, got {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise AdapterMismatchError(f"{what} holds NaN or infinite values; refusing to apply it")
    return array


def load_adapter_vector(model: torch.nn.Module, layout: AdapterLayout, vector: np.ndarray) -> None:
    """Write a float32 adapter vector into the model's trainable adapter, bit for bit."""
    array = _checked(vector, layout, "adapter vector").astype(np.float32, copy=False)
    params = _params_for(model, layout)
    with torch.no_grad():
        for slot in layout.tensors.slots:
            param = params[slot.name]
            values = torch.from_numpy(array[slot.offset : slot.offset + slot.size].copy())
            param.copy_(values.reshape(param.shape).to(param.dtype))


def adapter_delta(model: torch.nn.Module, layout: AdapterLayout, start: np.ndarray) -> np.ndarray:
    """The update a party sends: its trained adapter minus the round-start adapter."""
    start32 = _checked(start, layout, "round-start adapter").astype(np.float32, copy=False)
    return adapter_vector(model, layout) - start32


def apply_mean_delta(
    model: torch.nn.Module, layout: AdapterLayout, start: np.ndarray, mean_delta: np.ndarray
) -> np.ndarray:
    """Set the adapter to start + mean_delta (summed in float64); return the new vector."""
    start64 = _checked(start, layout, "round-start adapter").astype(np.float64)
    delta64 = _checked(mean_delta, layout, "aggregate").astype(np.float64)
    new = (start64 + delta64).astype(np.float32)
    load_adapter_vector(model, layout, new)
    return new


def check_base(layout: AdapterLayout, base_hash: bytes) -> None:
    """Refuse an adapter layout built for another base model."""
    if layout.base_model_hash != base_hash:
        raise AdapterMismatchError(
            f"adapter built for base model {layout.base_model_hash.hex()[:16]}..., this model "
            f"is {base_hash.hex()[:16]}...; load the base model the federation agreed on"
        )
