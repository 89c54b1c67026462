"""Cumulative contribution scores (learner.contribution.cumulative_scores) on the tiny
captioner, with real in-process SecAgg+ and client DP, and the differencing attack on
what they release, both ways.

The release is each organisation's mean centred whole-run update; a server holding the
coalition models of S and S + {o} subtracts them and gets o's mean back. Without DP that
recovers the organisation's update (the SecAgg+ floor keeps it a mean of its offices,
not one office's); with client DP the error is the calibrated noise of a d-dimensional
mean, and what is left points nowhere near the update.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

from fedveil.errors import ConfigError, PrivacyBudgetExceededError
from fedveil.learner.contribution import Scoring, validation_utility
from fedveil.learner.contribution.cumulative_scores import (
    coalition_models,
    cumulative_contributions,
)
from fedveil.learner.contribution.secure_run import ScoringPlan, make_scoring
from fedveil.learner.training.party import Party, PartyUpdate
from fedveil.runners.aggregators import InProcessSecAgg
from tests.helpers.contribution_fixtures import SMALL, Grouped, ids_of, small_federation

EPSILON, DELTA, CLIP = 4.0, 1e-5, 10.0


def federation() -> tuple[Grouped, Party, Callable[[np.ndarray], float]]:
    grouped, first, scenes, pixels = small_federation()
    return grouped, first, validation_utility(first, scenes, pixels)


def recording_updates(grouped: Grouped) -> dict[str, np.ndarray]:
    """Each client's own sum of updates, kept as the client trains (the test's truth)."""
    sums: dict[str, np.ndarray] = {}
    for clients in grouped.values():
        for cid, party in clients.items():
            train_round = party.train_round

            def recorded(r: int, cid: str = cid, train: Callable[..., PartyUpdate] = train_round):
                update = train(r)
                sums[cid] = sums.get(cid, 0.0) + update.vector.astype(np.float64)
                return update

            party.train_round = recorded  # type: ignore[method-assign]
    return sums


def test_without_dp_duplicates_tie_and_the_grand_coalition_is_the_federation() -> None:
    grouped, first, utility = federation()
    ids = ids_of(grouped)
    start = first.global_vector.astype(np.float64).copy()
    train = InProcessSecAgg(ids, first.layout.size, rounds=SMALL.rounds)
    plain = make_scoring(ScoringPlan("inf", None), ids, DELTA, CLIP, dimension=first.layout.size)
    run = cumulative_contributions(grouped, SMALL.rounds, utility, train, [plain])
    (result,) = run.results
    assert result.epsilon == {}
    assert result.shapley["energy"] == pytest.approx(result.shapley["energy-dup"], abs=1e-4)
    assert result.shapley["energy"] != pytest.approx(result.shapley["urban"], abs=1e-4)
    grand = result.values["energy+energy-dup+urban"]
    assert sum(result.shapley.values()) == pytest.approx(grand)  # efficiency
    # the grand coalition's model is the federation's own final adapter
    final = float(utility(run.global_vector.astype(np.float32))) - run.start_utility
    assert grand == pytest.approx(final, abs=1e-3)
    assert result.values["{}"] == 0.0 and run.start_utility == pytest.approx(
        float(utility(start.astype(np.float32)))
    )


def test_coalition_models_weight_organisations_by_their_clients_weights() -> None:
    start, public = np.zeros(2), np.array([1.0, 1.0])
    released = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 3.0])}
    models = coalition_models(start, public, released, {"a": 3.0, "b": 1.0})
    assert np.array_equal(models[frozenset()], start)
    assert np.allclose(models[frozenset({"a"})], [2.0, 1.0])
    assert np.allclose(models[frozenset({"a", "b"})], [1.75, 1.75])  # (3 a + b) / 4 + M


def test_one_release_per_client_charged_once_and_the_budget_holds() -> None:
    grouped, first, utility = federation()
    ids = ids_of(grouped)
    size = first.layout.size
    made: list[tuple[tuple[str, ...], int, int]] = []
    scoring = make_scoring(ScoringPlan("dp", EPSILON), ids, DELTA, CLIP, dimension=size)

    def recording(client_ids: Sequence[str], planned: int) -> InProcessSecAgg:
        release = scoring.make_release(client_ids, planned)
        assert isinstance(release, InProcessSecAgg)
        made.append((tuple(client_ids), planned, release.dimension))
        return release

    dp = Scoring("dp", recording, scoring.ledgers)
    train = InProcessSecAgg(ids, size, rounds=SMALL.rounds + 1)
    run = cumulative_contributions(grouped, SMALL.rounds, utility, train, [dp])
    assert sorted(made) == sorted((tuple(c), 1, size) for c in grouped.values())
    assert scoring.ledgers is not None
    for ledger in scoring.ledgers.values():
        assert ledger.rounds == 1 and 0.5 * EPSILON < ledger.spent_epsilon <= EPSILON * 1.01
    assert set(run.results[0].epsilon) == set(ids)
    with pytest.raises(PrivacyBudgetExceededError):  # refused before anything trains
        cumulative_contributions(grouped, 1, utility, train, [dp])
    assert len(train.results) == SMALL.rounds


def _differencing(epsilon: float | None) -> tuple[float, float, float]:
    """Run a scoring, then attack: model(S + {urban}) - model(S), rescaled by the weights,
    is urban's released mean; compare it with urban's true mean centred update.
    (relative error, cosine with the truth, predicted noise norm / truth norm)."""
    grouped, first, utility = federation()
    ids = ids_of(grouped)
    size = first.layout.size
    sums = recording_updates(grouped)
    start = first.global_vector.astype(np.float64).copy()
    means: list[np.ndarray] = []
    federation_round = InProcessSecAgg(ids, size, rounds=SMALL.rounds)

    def train(updates: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
        means.append(np.asarray(federation_round(updates), dtype=np.float64))
        return means[-1]

    releases: dict[str, InProcessSecAgg] = {}
    scoring = make_scoring(ScoringPlan("x", epsilon), ids, DELTA, CLIP, dimension=size)

    def keeping(client_ids: Sequence[str], planned: int) -> InProcessSecAgg:
        release = scoring.make_release(client_ids, planned)
        assert isinstance(release, InProcessSecAgg)
        releases[client_ids[0].rsplit("-", 1)[0]] = release
        return release

    run = cumulative_contributions(
        grouped, SMALL.rounds, utility, train, [Scoring("x", keeping, scoring.ledgers)]
    )
    public = np.sum(means, axis=0)
    assert np.allclose(run.global_vector, start + public, atol=1e-5)
    released = {o: np.asarray(r.results[0].weighted_mean) for o, r in releases.items()}
    weights = dict.fromkeys(released, 1.0)  # equal weights: the attacker needs only a ratio
    models = coalition_models(start, public, released, weights)
    s = frozenset({"energy"})
    recovered = 2 * (models[s | {"urban"}] - start - public) - (models[s] - start - public)
    true_mean = np.mean([sums[cid] - public for cid in grouped["urban"]], axis=0)
    error = float(np.linalg.norm(recovered - true_mean))
    norm = float(np.linalg.norm(true_mean))
    cosine = float(recovered @ true_mean / (np.linalg.norm(recovered) * norm))
    privacy = releases["urban"].results[0].privacy
    predicted = 0.0 if privacy is None else privacy.noise_std * np.sqrt(size)
    return error / norm, cosine, predicted / norm


def test_without_dp_differencing_recovers_the_organisations_mean_update() -> None:
    relative, cosine, _ = _differencing(None)
    assert relative < 1e-3 and cosine > 0.9999


def test_with_client_dp_differencing_gets_the_calibrated_noise_and_no_direction() -> None:
    relative, cosine, predicted = _differencing(EPSILON)
    assert predicted > 1.0  # the noise is larger than the update at two offices
    assert relative == pytest.approx(predicted, rel=0.15)
    assert abs(cosine) < 0.2


def test_bad_inputs_are_refused() -> None:
    grouped, first, utility = federation()
    ids = ids_of(grouped)
    train = InProcessSecAgg(ids, first.layout.size, rounds=1)
    plain = make_scoring(ScoringPlan("inf", None), ids, DELTA, CLIP, dimension=first.layout.size)
    one_office = {org: dict(list(c.items())[:1]) for org, c in grouped.items()}
    with pytest.raises(ConfigError, match="at least 2"):
        cumulative_contributions(one_office, 1, utility, train, [plain])
    with pytest.raises(ConfigError, match="rounds"):
        cumulative_contributions(grouped, 0, utility, train, [plain])
    with pytest.raises(ConfigError, match="scoring"):
        cumulative_contributions(grouped, 1, utility, train, [])
