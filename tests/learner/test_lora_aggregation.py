"""Aggregation variants: FFA-LoRA is exact, FedAvg of A and B is not (and by how much)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedveil.errors import ConfigError
from fedveil.learner.lora import (
    AdapterLayout,
    AggregationVariant,
    LoraSettings,
    adapter_layout,
    adapter_vector,
    apply_lora,
    apply_mean_delta,
    base_model_hash,
    load_adapter_vector,
    low_rank_products,
    split_update,
    weighted_mean,
)
from tests.helpers.captioner_fixtures import tiny_base

WEIGHTS = (40, 25, 35)


def _parties(
    variant: AggregationVariant,
) -> tuple[list[torch.nn.Module], AdapterLayout, np.ndarray]:
    settings = LoraSettings(rank=4, alpha=8, variant=variant, seed=3)
    models: list[torch.nn.Module] = [apply_lora(tiny_base().model, settings) for _ in WEIGHTS]
    base_hash = base_model_hash(models[0])
    layout = adapter_layout(models[0], base_hash, settings.variant)
    start = adapter_vector(models[0], layout)
    return models, layout, start


def _train_differently(
    models: list[torch.nn.Module], layout: AdapterLayout, start: np.ndarray
) -> list[np.ndarray]:
    """Give every party its own adapter, as local training would (B and, if trained, A)."""
    trained = []
    for i, model in enumerate(models):
        vector = start + np.random.default_rng(i).normal(0, 0.2, start.shape).astype(np.float32)
        load_adapter_vector(model, layout, vector)
        trained.append(vector)
    return trained


def _full_tensors(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {
        name: p.detach().double().numpy()
        for name, p in model.named_parameters()
        if ".lora_A." in name or ".lora_B." in name
    }


def _mean_products(models: list[torch.nn.Module], scaling: float) -> dict[str, np.ndarray]:
    products = [low_rank_products(_full_tensors(m), scaling) for m in models]
    total = sum(WEIGHTS)
    means: dict[str, np.ndarray] = {}
    for k in products[0]:
        means[k] = (
            np.sum([w * p[k] for w, p in zip(WEIGHTS, products, strict=True)], axis=0) / total
        )
    return means


def test_weighted_mean_is_the_fedavg_formula() -> None:
    updates = [(np.array([1.0, 2.0]), 1), (np.array([3.0, 6.0]), 3)]
    np.testing.assert_allclose(weighted_mean(updates), [2.5, 5.0])
    with pytest.raises(ConfigError, match="empty"):
        weighted_mean([])
    with pytest.raises(ConfigError, match="positive"):
        weighted_mean([(np.zeros(2), 0)])


def test_ffa_aggregate_equals_the_mean_of_the_full_low_rank_products() -> None:
    models, layout, start = _parties(AggregationVariant.FFA)
    trained = _train_differently(models, layout, start)
    scaling = 8 / 4
    expected = _mean_products(models, scaling)
    deltas = [t - start for t in trained]
    mean = weighted_mean(list(zip(deltas, WEIGHTS, strict=True)))
    global_model = apply_lora(tiny_base().model, LoraSettings(rank=4, alpha=8, seed=3))
    apply_mean_delta(global_model, layout, start, mean)
    got = low_rank_products(_full_tensors(global_model), scaling)
    assert got.keys() == expected.keys() and got
    for name in got:
        # float32 storage of B limits agreement to ~1e-7 relative
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6)


def test_fedavg_of_a_and_b_is_not_the_mean_of_the_products() -> None:
    models, layout, start = _parties(AggregationVariant.FEDAVG)
    trained = _train_differently(models, layout, start)
    scaling = 8 / 4
    expected = _mean_products(models, scaling)
    mean = weighted_mean(list(zip(trained, WEIGHTS, strict=True)))
    averaged = split_update(mean, layout)
    got = low_rank_products(averaged, scaling)
    # Same module keys (layout names are the canonical ones of the model's tensors).
    canonical = {
        k.replace("base_model.model.", "").replace(".default", ""): v for k, v in expected.items()
    }
    assert got.keys() == canonical.keys()
    gaps = [np.linalg.norm(got[k] - canonical[k]) / np.linalg.norm(canonical[k]) for k in got]
    # The cross terms B_i A_j make the product of means a different matrix, not a rounding.
    assert min(gaps) > 0.05


def test_split_update_names_match_the_layout() -> None:
    _, layout, start = _parties(AggregationVariant.FFA)
    tensors = split_update(start, layout)
    assert list(tensors) == list(layout.names)
    assert all(t.dtype == np.float64 for t in tensors.values())
