"""Projected contribution scores (learner.contribution.projected_scores) on the tiny
captioner, with real in-process SecAgg+ and client DP (secure_run.make_scoring)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from fedveil.errors import ConfigError, PrivacyBudgetExceededError
from fedveil.learner.contribution import (
    Scoring,
    coalition_values,
    projected_contributions,
    validation_gradient,
    validation_utility,
)
from fedveil.learner.contribution.projected_scores import Validator
from fedveil.learner.contribution.scenario import content_name
from fedveil.learner.contribution.secure_run import ScoringPlan, make_scoring
from fedveil.learner.data import Domain, make_party_dataset
from fedveil.learner.data.datasets import PartyDataset, make_test_set
from fedveil.learner.training import encode_images
from fedveil.learner.training.party import Party
from fedveil.runners.aggregators import InProcessSecAgg
from tests.helpers.contribution_fixtures import SMALL, ids_of, small_federation

EPSILON, DELTA, CLIP = 4.0, 1e-5, 0.5


def federation() -> tuple[dict[str, dict[str, Party]], Party, Validator]:
    """energy, an exact duplicate of it, and urban; two offices each."""
    grouped, first, scenes, pixels = small_federation()
    return grouped, first, validation_gradient(first, scenes, pixels)


def test_duplicates_are_named_alike_and_tie_without_dp() -> None:
    grouped, first, validator = federation()
    ids = ids_of(grouped)
    assert grouped["energy"]["energy-0"].name == grouped["energy-dup"]["energy-dup-0"].name
    assert grouped["energy"]["energy-0"].name != grouped["urban"]["urban-0"].name
    train = InProcessSecAgg(ids, first.layout.size, rounds=SMALL.rounds)
    plain = make_scoring(ScoringPlan("inf", None), ids, DELTA, CLIP)
    run = projected_contributions(grouped, SMALL.rounds, validator, train, [plain])
    result = run.results[0]
    assert result.epsilon == {} and len(result.rounds) == SMALL.rounds
    assert result.shapley["energy"] == pytest.approx(result.shapley["energy-dup"], abs=1e-9)
    assert result.shapley["energy"] != pytest.approx(result.shapley["urban"])
    for row in result.rounds:
        assert row.released["energy"] == pytest.approx(row.released["energy-dup"], abs=1e-9)
        assert abs(sum(row.released.values())) < 3 * CLIP  # numbers centred on the step
        values = coalition_values(
            row.gradient_norm, row.offset, row.released, {o: 2 for o in grouped}
        )
        grand = values[frozenset(grouped)]
        assert sum(row.shapley.values()) == pytest.approx(grand)  # efficiency, per round
    assert len(run.utilities) == SMALL.rounds
    assert all(
        np.array_equal(p.global_vector, run.global_vector)
        for c in grouped.values()
        for p in c.values()
    )


def test_every_client_is_charged_once_a_round_and_the_budget_holds() -> None:
    grouped, first, validator = federation()
    ids = ids_of(grouped)
    made: list[tuple[tuple[str, ...], int, int]] = []
    scoring = make_scoring(ScoringPlan("dp", EPSILON), ids, DELTA, CLIP)

    def recording(client_ids: Sequence[str], planned: int) -> InProcessSecAgg:
        release = scoring.make_release(client_ids, planned)
        assert isinstance(release, InProcessSecAgg)
        made.append((tuple(client_ids), planned, release.dimension))
        return release

    dp = Scoring("dp", recording, scoring.ledgers)
    train = InProcessSecAgg(ids, first.layout.size, rounds=SMALL.rounds + 1)
    run = projected_contributions(grouped, SMALL.rounds, validator, train, [dp])
    assert sorted(made) == sorted(
        (tuple(clients), SMALL.rounds, 1) for clients in grouped.values()
    )  # one dimension-1 release per organisation, planned for `rounds` releases
    assert scoring.ledgers is not None
    for ledger in scoring.ledgers.values():
        assert ledger.rounds == SMALL.rounds
        assert 0.5 * EPSILON < ledger.spent_epsilon <= EPSILON * 1.01
    assert set(run.results[0].epsilon) == set(ids)
    with pytest.raises(PrivacyBudgetExceededError):  # refused before anything is released
        projected_contributions(grouped, 1, validator, train, [dp])
    for clients in grouped.values():  # nor trained: the round stopped before it began
        assert all(np.array_equal(p.global_vector, run.global_vector) for p in clients.values())
    assert len(train.results) == SMALL.rounds


def test_clients_normalise_the_direction_a_server_sends() -> None:
    """A gradient scaled by 10^6 gives the same released numbers (the scores scale with
    |g| as the first-order utility change does)."""
    grouped, first, validator = federation()
    ids = ids_of(grouped)
    start = first.global_vector.copy()

    def run_with(scale: float) -> tuple[dict[str, float], ...]:
        for clients in grouped.values():
            for party in clients.values():
                party.global_vector = start.copy()

        def scaled(vector: np.ndarray) -> tuple[float, np.ndarray]:
            utility, grad = validator(vector)
            return utility, scale * grad

        train = InProcessSecAgg(ids, first.layout.size, rounds=1)
        plain = make_scoring(ScoringPlan("inf", None), ids, DELTA, CLIP)
        run = projected_contributions(grouped, 1, scaled, train, [plain])
        return tuple(row.released for row in run.results[0].rounds)

    small, huge = run_with(1.0), run_with(1e6)
    for a, b in zip(small, huge, strict=True):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9)


def test_validation_gradient_matches_finite_differences_of_the_utility() -> None:
    _, first, validator = federation()
    scenes = make_test_set(SMALL.data)
    pixels = encode_images(first.loaded.image_processor, [s.image for s in scenes])
    utility = validation_utility(first, scenes, pixels)
    start = first.global_vector.astype(np.float64) + 0.05
    value, grad = validator(start.astype(np.float32))
    assert value == pytest.approx(utility(start.astype(np.float32)), rel=1e-5)
    direction = np.random.default_rng(0).normal(size=start.shape)
    direction /= np.linalg.norm(direction)
    eps = 1e-2
    up = utility((start + eps * direction).astype(np.float32))
    down = utility((start - eps * direction).astype(np.float32))
    assert (up - down) / (2 * eps) == pytest.approx(float(grad @ direction), rel=0.05, abs=1e-4)


def test_bad_federations_are_refused() -> None:
    grouped, first, validator = federation()
    ids = ids_of(grouped)
    train = InProcessSecAgg(ids, first.layout.size, rounds=1)
    plain = make_scoring(ScoringPlan("inf", None), ids, DELTA, CLIP)
    one_office = {org: dict(list(c.items())[:1]) for org, c in grouped.items()}
    with pytest.raises(ConfigError, match="at least 2"):
        projected_contributions(one_office, 1, validator, train, [plain])
    with pytest.raises(ConfigError, match="rounds"):
        projected_contributions(grouped, 0, validator, train, [plain])
    with pytest.raises(ConfigError, match="scoring"):
        projected_contributions(grouped, 1, validator, train, [])
    partial = make_scoring(ScoringPlan("dp", EPSILON), ids[:-1], DELTA, CLIP)
    with pytest.raises(ConfigError, match="ledgers"):
        projected_contributions(grouped, 1, validator, train, [partial])
    with pytest.raises(ConfigError, match="epsilon"):
        make_scoring(ScoringPlan("bad", -1.0), ids, DELTA, CLIP)
    with pytest.raises(ConfigError, match="clip"):
        make_scoring(ScoringPlan("bad", 1.0), ids, DELTA, 0.0)
    data = make_party_dataset(SMALL.data, Domain.ENERGY)
    assert content_name(data) == content_name(PartyDataset("other", Domain.ENERGY, data.examples))
