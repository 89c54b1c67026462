"""Contribution rounds from protected coalition releases (learner.contribution.
private_rounds), on the tiny captioner with real in-process SecAgg+ and client DP."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from fedveil.errors import ConfigError, PrivacyBudgetExceededError
from fedveil.learner.contribution import (
    planned_releases_per_client,
    private_contributions,
    validation_utility,
)
from fedveil.learner.data import CityDataConfig, Domain, make_party_dataset
from fedveil.learner.data.datasets import make_test_set, split_party_dataset
from fedveil.learner.federated_local import CaptionerRecipe, make_client_parties
from fedveil.learner.lora import LoraSettings
from fedveil.learner.training import TrainConfig, encode_images
from fedveil.learner.training.party import Party
from fedveil.runners.aggregators import InProcessSecAgg
from fedveil.secagg.dp import PrivacyBudget, PrivacyLedger
from tests.helpers.captioner_fixtures import tiny_base

SMALL = CaptionerRecipe(
    rounds=2,
    lora=LoraSettings(rank=2, alpha=4),
    train=TrainConfig(epochs=1, batch_size=4, learning_rate=1e-2, progress=False),
    data=CityDataConfig(samples_per_party=8, test_samples=2, image_size=32),
)
EPSILON, DELTA = 4.0, 1e-5


def organisations(clients: int = 2) -> dict[str, list[Party]]:
    offices = {}
    for domain in (Domain.ENERGY, Domain.URBAN):
        offices.update(split_party_dataset(make_party_dataset(SMALL.data, domain), clients))
    parties = make_client_parties(tiny_base(), offices, SMALL)
    return {org: [p for p in parties if p.name.startswith(org)] for org in ("energy", "urban")}


def dp_release(ids: Sequence[str], planned: int, size: int = 1) -> InProcessSecAgg:
    return InProcessSecAgg(ids, size, rounds=planned, dp_epsilon=EPSILON, dp_delta=DELTA)


def test_every_client_is_charged_for_each_coalition_that_holds_it() -> None:
    orgs = organisations()
    size = orgs["energy"][0].layout.size
    made: list[tuple[tuple[str, ...], int]] = []

    def release(ids: Sequence[str], planned: int) -> InProcessSecAgg:
        made.append((tuple(ids), planned))
        return dp_release(ids, planned, size)

    ledgers = {
        p.name: PrivacyLedger(PrivacyBudget(EPSILON * 1.01, DELTA), owner=p.name)
        for clients in orgs.values()
        for p in clients
    }
    utility = lambda vector: -float(np.linalg.norm(vector))  # noqa: E731
    run = private_contributions(orgs, 2, release, utility, ledgers)
    assert run.releases_per_round == 3 and len(run.rounds) == 2
    assert sorted(len(ids) for ids, _ in made) == [2, 2, 4]  # no coalition below 2 clients
    assert {planned for _, planned in made} == {planned_releases_per_client(2, 2)} == {4}
    for ledger in ledgers.values():
        assert ledger.rounds == 4  # 2 coalitions hold each client, 2 rounds
        assert 0.5 * EPSILON < ledger.spent_epsilon <= EPSILON * 1.01
    assert set(run.epsilon) == set(ledgers)
    for r in run.rounds:
        assert set(r.shapley) == {"energy", "urban"}
        grand = r.values[frozenset({"energy", "urban"})] - r.values[frozenset()]
        assert sum(r.shapley.values()) == pytest.approx(grand)  # efficiency, per round
    assert all(np.array_equal(p.global_vector, run.global_vector) for c in orgs.values() for p in c)
    # one more run on the same ledgers would overspend: refused before anything is released
    with pytest.raises(PrivacyBudgetExceededError):
        private_contributions(orgs, 1, release, utility, ledgers)


def test_a_coalition_of_one_organisation_must_meet_the_minimum_cohort() -> None:
    orgs = organisations(clients=1)
    with pytest.raises(ConfigError, match="at least 2"):
        private_contributions(orgs, 1, dp_release, lambda v: 0.0)
    with pytest.raises(ConfigError, match="two organisations"):
        private_contributions({"energy": orgs["energy"]}, 1, dp_release, lambda v: 0.0, None, 1)


def test_validation_utility_is_minus_the_mean_caption_loss_of_the_candidate() -> None:
    party = organisations()["energy"][0]
    scenes = make_test_set(SMALL.data)
    pixels = encode_images(party.loaded.image_processor, [s.image for s in scenes])
    utility = validation_utility(party, scenes, pixels)
    start = party.global_vector.copy()
    expected = -float(np.mean(list(party.caption_losses(scenes, pixels).values())))
    assert utility(start) == pytest.approx(expected)
    moved = start + np.float32(0.5)
    assert utility(moved) != pytest.approx(expected)
    assert np.array_equal(party.global_vector, start)  # the party's own adapter is untouched
