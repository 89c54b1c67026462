"""Heterogeneous parties on the real captioner with peft: ranks, text-only, truncation.

A rank-r party's adapter must be the federation's rank-max adapter cut to r (its frozen
A the first r rows of the federation's A, its scaling the same), a text-only party must
leave the image-side adapters to the image parties, and a round must move each side by
the weighted mean of exactly the parties that trained it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from fedveil.errors import ConfigError
from fedveil.learner.data import CityDataConfig, make_party_datasets
from fedveil.learner.federated_local import CaptionerRecipe
from fedveil.learner.lora import LoraSettings, canonical_name, weighted_mean
from fedveil.learner.lora.adapter import is_lora_a
from fedveil.learner.lora.aggregation import WeightedUpdate
from fedveil.learner.lora.hetero_cohort import HeteroCohort, make_hetero_cohort, run_hetero_round
from fedveil.learner.lora.hetero_config import HeteroConfig
from fedveil.learner.lora.hetero_layout import Side, side_of
from fedveil.learner.training import TrainConfig
from tests.helpers.captioner_fixtures import tiny_base

RECIPE = CaptionerRecipe(
    rounds=1,
    lora=LoraSettings(rank=4, alpha=8),
    train=TrainConfig(epochs=1, batch_size=8, learning_rate=1e-2, progress=False),
    data=CityDataConfig(samples_per_party=8, test_samples=4),
)
HETERO = HeteroConfig(4, {"energy": 2, "residential": 4, "urban": 3}, frozenset({"urban"}))


def _cohort() -> HeteroCohort:
    recipe = dataclasses.replace(RECIPE, hetero=HETERO)
    return make_hetero_cohort(tiny_base(), make_party_datasets(RECIPE.data), recipe, HETERO)


def test_members_hold_the_rank_max_adapter_cut_to_their_rank_with_one_scaling() -> None:
    cohort = _cohort()
    reference = {canonical_name(n): p for n, p in cohort.reference.model.named_parameters()}
    for party in cohort.members:
        rank = HETERO.rank_of(party.name)
        assert party.lora.rank == rank and party.lora.scaling == RECIPE.lora.scaling
        for name, param in party.model.named_parameters():
            if is_lora_a(name):
                assert torch.equal(param, reference[canonical_name(name)][:rank])
        sides = {side_of(s.name) for s in party.layout.tensors.slots}
        assert sides == ({Side.TEXT} if party.name == "urban" else {Side.TEXT, Side.VISION})
        assert cohort.layout.party_shape(party.layout).rank(Side.TEXT) == rank


def test_one_round_moves_each_side_by_the_mean_of_the_parties_that_trained_it() -> None:
    cohort = _cohort()
    layout = cohort.layout
    start = cohort.global_vector.astype(np.float64)
    sent: list[tuple[np.ndarray, float]] = []

    def spy(updates: Sequence[WeightedUpdate]) -> np.ndarray:
        sent.extend(updates)
        return weighted_mean(updates)

    run_hetero_round(cohort, 0, spy)
    moved = cohort.global_vector.astype(np.float64) - start
    padded = [x[: layout.full.size] for x, _ in sent]
    weights = [w for _, w in sent]
    groups = layout.coordinate_groups()
    vision = np.isin(groups, [layout.group(Side.VISION, k) for k in range(4)])
    # per coordinate, the weighted mean over the parties whose indicator holds its group
    holds = [x[layout.full.size : -1][groups] for x, _ in sent]
    assert not np.any(holds[2][vision]) and not np.any(padded[2][vision])  # urban: text only
    assert np.all(holds[1] == 1) and not np.all(holds[0] == 1)  # rank 4 and rank 2
    assert np.any(padded[0][vision] != 0)
    share = sum(w * h for w, h in zip(weights, holds, strict=True))
    expected = sum(w * p for w, p in zip(weights, padded, strict=True)) / share
    assert np.allclose(moved, expected, atol=1e-6)
    # vision column 0: energy and residential trained it, the text-only party's weight is out
    col0 = groups == layout.group(Side.VISION, 0)
    image_mean = (weights[0] * padded[0] + weights[1] * padded[1]) / (weights[0] + weights[1])
    assert np.allclose(moved[col0], image_mean[col0], atol=1e-6)
    naive = np.sum([w * p for w, p in zip(weights, padded, strict=True)], axis=0) / sum(weights)
    assert not np.allclose(moved[col0], naive[col0], atol=1e-6)
    # text column 3 was trained by residential (rank 4) alone
    col3 = groups == layout.group(Side.TEXT, 3)
    assert np.allclose(moved[col3], padded[1][col3], atol=1e-6)
    for party in cohort.members:
        assert np.array_equal(
            party.global_vector, layout.truncate(party.layout, cohort.global_vector)
        )


def test_text_only_needs_an_image_party() -> None:
    everyone = HeteroConfig(4, text_only=frozenset({"energy", "residential", "urban"}))
    with pytest.raises(ConfigError, match="every party is text-only"):
        make_hetero_cohort(
            tiny_base(),
            make_party_datasets(RECIPE.data),
            dataclasses.replace(RECIPE, hetero=everyone),
            everyone,
        )
    with pytest.raises(ConfigError, match="maximum rank 8 must be the adapter's rank 4"):
        dataclasses.replace(RECIPE, hetero=HeteroConfig(8))


def test_holding_the_global_adapter_trains_only_the_first_r_columns() -> None:
    """hold_global: every member holds the rank-max adapter, but its delta is exactly
    zero beyond its own rank (the masked gradients leave Adam's state at zero there)."""
    held = dataclasses.replace(HETERO, hold_global=True)
    recipe = dataclasses.replace(RECIPE, hetero=held)
    cohort = make_hetero_cohort(tiny_base(), make_party_datasets(RECIPE.data), recipe, held)
    layout = cohort.layout
    for party in cohort.members:
        rank = held.rank_of(party.name)
        assert layout.party_shape(party.layout).rank(Side.TEXT) == 4  # holds rank max
        assert cohort.shapes[party.name].rank(Side.TEXT) == rank
        update = party.train_round(0)
        shape = cohort.shapes[party.name]
        padded = layout.pad(party.layout, update.vector)
        inside = layout.trained_mask(shape)
        assert np.any(padded[inside] != 0)
        assert not np.any(padded[~inside]), party.name
        assert np.array_equal(
            layout.extend(party.layout, update.vector, shape)[: layout.full.size], padded
        )
