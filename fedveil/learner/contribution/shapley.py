"""Exact Shapley values over a few players, and Spearman's rank correlation.

Why exact: the federations here have three or four organisations, so all 2^m coalitions
are few (8 or 16) and no sampling error needs explaining; Monte Carlo permutation
sampling pays off only from about ten players on.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from fedveil.errors import ConfigError

Coalition = frozenset[str]


def coalitions(players: Sequence[str]) -> list[Coalition]:
    """Every coalition of `players`, the empty one included, smallest first."""
    names = list(players)
    if len(set(names)) != len(names) or not names:
        raise ConfigError(f"players must be distinct and at least one, got {names}")
    return [
        frozenset(c) for size in range(len(names) + 1) for c in itertools.combinations(names, size)
    ]


def shapley_values(players: Sequence[str], value: Mapping[Coalition, float]) -> dict[str, float]:
    """phi_i = sum over S without i of |S|! (m - |S| - 1)! / m! (v(S + i) - v(S)), from a
    table holding v of every coalition (the empty one too)."""
    names = list(players)
    missing = [sorted(c) for c in coalitions(names) if c not in value]
    if missing:
        raise ConfigError(f"the value table lacks coalitions {missing[:3]}")
    m = len(names)
    phi = {}
    for player in names:
        others = [p for p in names if p != player]
        total = 0.0
        for size in range(m):
            weight = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
            for subset in itertools.combinations(others, size):
                s = frozenset(subset)
                total += weight * (value[s | {player}] - value[s])
        phi[player] = total
    return phi


def exact_shapley(players: Sequence[str], value: Callable[[Coalition], float]) -> dict[str, float]:
    """Shapley values with `value` called once per coalition."""
    return shapley_values(players, {c: float(value(c)) for c in coalitions(players)})


def _ranks(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    order = np.argsort(array, kind="stable")
    ranks = np.empty(len(array), dtype=np.float64)
    ranks[order] = np.arange(len(array), dtype=np.float64)
    for value in np.unique(array):  # ties share their mean rank
        ranks[array == value] = ranks[array == value].mean()
    return ranks


def spearman(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Spearman's rho between two scorings of the same players (ties: mean ranks)."""
    if set(a) != set(b) or len(a) < 2:
        raise ConfigError(f"need the same two or more players, got {sorted(a)} and {sorted(b)}")
    names = sorted(a)
    ra, rb = _ranks([a[n] for n in names]), _ranks([b[n] for n in names])
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])
