"""Cleaning inside the party (learner.quality.federation): what it sends is what a plain
party sends, the update's shape and the full weight, and nothing else."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pytest

from fedveil.errors import ConfigError
from fedveil.learner.data import CityDataConfig, make_party_datasets
from fedveil.learner.data.concepts import DOMAIN_PROMPTS, Domain
from fedveil.learner.federated_local import CaptionerRecipe, make_parties, run_federated
from fedveil.learner.lora import LoraSettings, WeightedUpdate, weighted_mean
from fedveil.learner.quality import (
    CleaningMethod,
    CleaningParty,
    CleaningPolicy,
    Scorer,
    corrupt_dataset,
)
from fedveil.learner.quality.federation import same_steps
from fedveil.learner.training import TrainConfig
from fedveil.learner.training.dp_loop import DPTrainConfig
from fedveil.learner.training.party import Party
from tests.helpers.captioner_fixtures import tiny_base

SMALL = CaptionerRecipe(
    rounds=2,
    lora=LoraSettings(rank=2, alpha=4),
    train=TrainConfig(epochs=1, batch_size=8, learning_rate=1e-2, progress=False),
    data=CityDataConfig(samples_per_party=12, test_samples=4, image_size=32),
)
DROP_QUARTER = CleaningPolicy(CleaningMethod.TOP_FRACTION, fraction=0.25)
OTHERS = [DOMAIN_PROMPTS[Domain.RESIDENTIAL], DOMAIN_PROMPTS[Domain.URBAN]]


def parties(cleaning: bool, scorer: Scorer = Scorer.PROMPT_CONTRAST) -> list[Party]:
    datasets = make_party_datasets(SMALL.data)
    datasets["energy"] = corrupt_dataset(datasets["energy"], 0.3, "wrong-domain").dataset
    made = make_parties(tiny_base(), datasets, SMALL)
    if cleaning:
        made[0] = CleaningParty(
            made[0], DROP_QUARTER, start_round=0, scorer=scorer, other_prompts=OTHERS
        )
    return made


def sent(cohort: list[Party]) -> list[list[tuple[type, tuple[int, ...], str, float]]]:
    """Run the federation; record per round what each party handed the aggregator."""
    seen: list[list[tuple[type, tuple[int, ...], str, float]]] = []

    def spy(updates: Sequence[WeightedUpdate]) -> np.ndarray:
        seen.append([(type(v), np.asarray(v).shape, str(v.dtype), w) for v, w in updates])
        return weighted_mean(updates)

    run_federated(cohort, SMALL.rounds, spy, progress=False)
    return seen


@pytest.mark.parametrize("scorer", list(Scorer))
def test_a_cleaning_party_sends_what_a_plain_party_sends(scorer: Scorer) -> None:
    plain, cleaning = parties(False), parties(True, scorer)
    assert sent(plain) == sent(cleaning)  # same types, shapes, dtypes and weights
    party = cleaning[0]
    assert isinstance(party, CleaningParty)
    assert [r.round_index for r in party.history] == [0, 1]
    assert all(r.dropped == 3 and len(r.scores) == 12 for r in party.history)
    assert len(party.data) == 9 and party.weight == 12  # trained on 9, weighed as 12
    assert not np.array_equal(plain[0].global_vector, cleaning[0].global_vector)


def test_cleaning_waits_for_its_start_round() -> None:
    cohort = parties(False)
    cohort[0] = CleaningParty(cohort[0], DROP_QUARTER, start_round=1, other_prompts=OTHERS)
    run_federated(cohort, 2, progress=False)
    assert [r.round_index for r in cohort[0].history] == [1]  # type: ignore[attr-defined]


def test_bad_cleaning_parties_are_refused() -> None:
    cohort = parties(False)
    with pytest.raises(ConfigError, match="start_round"):
        CleaningParty(cohort[0], DROP_QUARTER, start_round=-1, other_prompts=OTHERS)
    with pytest.raises(ConfigError, match="other prompts"):
        CleaningParty(cohort[0], DROP_QUARTER)
    with pytest.raises(ValueError):
        CleaningParty(cohort[0], DROP_QUARTER, scorer="oracle", other_prompts=OTHERS)
    private = dataclasses.replace(SMALL, dp=DPTrainConfig(rounds=2))
    dp_party = make_parties(tiny_base(), make_party_datasets(SMALL.data), private)[0]
    with pytest.raises(ConfigError, match="DP-SGD"):
        CleaningParty(dp_party, DROP_QUARTER, other_prompts=OTHERS)


def test_same_steps_keeps_the_optimiser_steps_of_the_full_data() -> None:
    config = TrainConfig(epochs=1, batch_size=4, progress=False)
    kept = same_steps(config, 16, 9)  # 4 steps over 16; 9 examples are 3 batches a pass
    assert (kept.epochs, kept.max_steps) == (2, 4)
    assert same_steps(config, 16, 16).max_steps == 4
    with pytest.raises(ConfigError, match="kept"):
        same_steps(config, 16, 0)


def test_a_cleaning_party_takes_as_many_steps_as_over_its_full_data() -> None:
    recipe = dataclasses.replace(SMALL, train=dataclasses.replace(SMALL.train, batch_size=4))
    plain = make_parties(tiny_base(), make_party_datasets(recipe.data), recipe)[0]
    assert plain.train_round(0).stats.steps == 3  # 12 examples, batches of 4
    half = CleaningPolicy(CleaningMethod.TOP_FRACTION, fraction=0.5)
    for keep_steps, steps in ((True, 3), (False, 2)):
        cleaning = CleaningParty(
            make_parties(tiny_base(), make_party_datasets(recipe.data), recipe)[0],
            half,
            start_round=0,
            other_prompts=OTHERS,
            keep_steps=keep_steps,
        )
        assert cleaning.train_round(0).stats.steps == steps
        assert len(cleaning.data) == 6 and cleaning.weight == 12
