"""Combining the parties' LoRA updates, and why the two variants differ.

A LoRA layer changes a frozen weight W by s * B A (s = alpha / rank). FedAvg wants the
weighted mean of the parties' changes, sum_i w_i B_i A_i / sum_i w_i.

FEDAVG averages A and B separately. The product of the means is not the mean of the
products: (sum_i w_i B_i)(sum_j w_j A_j) / W^2 carries the cross terms B_i A_j (i != j), so
the aggregated adapter is only an approximation of the mean change, which is the
approximation most federated LoRA systems make.

FFA (FFA-LoRA) freezes A at a value every party derives from the shared seed (see
`learner.lora.adapter`); only B is trained and sent. Then sum_i w_i B_i A / W =
(sum_i w_i B_i / W) A: averaging B is the exact mean of the changes, and secure aggregation
(which can only add) computes exactly what FedAvg means.

`weighted_mean` is the plaintext reference aggregator; the secure service computes the
same function without seeing any single update.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from fedveil.errors import ConfigError
from fedveil.learner.lora.codec import AdapterLayout, AdapterMismatchError

WeightedUpdate = tuple[np.ndarray, float]
Aggregator = Callable[[Sequence[WeightedUpdate]], np.ndarray]
"""(update, weight) pairs in, the weighted mean out: the one thing a round computes."""


def weighted_mean(updates: Sequence[WeightedUpdate]) -> np.ndarray:
    """sum_i w_i x_i / sum_i w_i in float64 (the plaintext FedAvg aggregate)."""
    if not updates:
        raise ConfigError("cannot aggregate an empty cohort")
    size = np.asarray(updates[0][0]).shape
    total = np.zeros(size, dtype=np.float64)
    weight_sum = 0.0
    for vector, weight in updates:
        array = np.asarray(vector, dtype=np.float64)
        if array.shape != size:
            raise AdapterMismatchError(f"updates differ in shape: {array.shape} and {size}")
        if not (np.isfinite(weight) and weight > 0):
            raise ConfigError(f"update weights must be positive and finite, got {weight}")
        total += weight * array
        weight_sum += float(weight)
    return total / weight_sum


def lora_pairs(tensors: Mapping[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(B, A) per adapted module, from named tensors (`...lora_A.weight` / `...lora_B.weight`)."""
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, value in tensors.items():
        if ".lora_B." not in name:
            continue
        module = name.split(".lora_B.")[0]
        a_name = name.replace(".lora_B.", ".lora_A.")
        if a_name not in tensors:
            raise AdapterMismatchError(f"{name} has no matching {a_name}")
        pairs[module] = (np.asarray(value), np.asarray(tensors[a_name]))
    return pairs


def low_rank_products(
    tensors: Mapping[str, np.ndarray], scaling: float = 1.0
) -> dict[str, np.ndarray]:
    """scaling * B A per adapted module, in float64: the change LoRA makes to each weight."""
    return {
        module: scaling * (b.astype(np.float64) @ a.astype(np.float64))
        for module, (b, a) in lora_pairs(tensors).items()
    }


def split_update(vector: np.ndarray, layout: AdapterLayout) -> dict[str, np.ndarray]:
    """A flat update (or aggregate) as named float64 tensors."""
    return layout.tensors.split(np.asarray(vector))
