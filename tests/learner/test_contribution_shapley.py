"""Exact Shapley values and Spearman's rho (learner.contribution.shapley)."""

from __future__ import annotations

import pytest

from fedveil.errors import ConfigError
from fedveil.learner.contribution import coalitions, exact_shapley, shapley_values, spearman


def test_additive_games_give_each_player_its_own_worth() -> None:
    worth = {"a": 3.0, "b": 1.0, "c": 0.5}
    phi = exact_shapley(list(worth), lambda s: sum(worth[p] for p in s))
    assert phi == pytest.approx(worth)


def test_shapley_axioms_on_a_game_with_a_duplicate_and_a_null_player() -> None:
    """'d' duplicates 'a' (either one is enough), 'n' adds nothing: symmetry, null
    player, efficiency."""

    def value(s: frozenset[str]) -> float:
        return (2.0 if {"a", "d"} & s else 0.0) + (1.0 if "b" in s else 0.0)

    players = ["a", "b", "d", "n"]
    phi = exact_shapley(players, value)
    assert phi["a"] == pytest.approx(phi["d"]) == pytest.approx(1.0)
    assert phi["n"] == pytest.approx(0.0) and phi["b"] == pytest.approx(1.0)
    assert sum(phi.values()) == pytest.approx(value(frozenset(players)) - value(frozenset()))


def test_coalitions_and_tables_are_checked() -> None:
    assert len(coalitions(["a", "b", "c"])) == 8 and coalitions(["a"])[0] == frozenset()
    with pytest.raises(ConfigError, match="distinct"):
        coalitions(["a", "a"])
    with pytest.raises(ConfigError, match="lacks"):
        shapley_values(["a", "b"], {frozenset(): 0.0, frozenset({"a"}): 1.0})


def test_spearman_ranks_and_ties() -> None:
    truth = {"a": 3.0, "b": 2.0, "c": 1.0, "d": 0.0}
    assert spearman(truth, {"a": 30.0, "b": 2.5, "c": 0.1, "d": -5.0}) == pytest.approx(1.0)
    assert spearman(truth, {"a": 0.0, "b": 1.0, "c": 2.0, "d": 3.0}) == pytest.approx(-1.0)
    assert spearman(truth, {"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}) == 0.0
    tied = spearman(truth, {"a": 2.0, "b": 2.0, "c": 1.0, "d": 0.0})
    assert 0.9 < tied < 1.0
    with pytest.raises(ConfigError, match="same"):
        spearman(truth, {"a": 1.0})
