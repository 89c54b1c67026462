"""Exact Shapley values in the clear: the reference the private scores are checked against.

Every coalition of organisations trains its own plaintext federation of its members'
office clients (scenario.office_parties: the same split, local recipe and seeds as the
scored federation, only without the others) for the recipe's rounds from the same
start; a coalition's value is the utility of its final adapter, the empty coalition's
that of the start. Why the same offices and not each organisation as one party: the
truth is the value of each organisation to the federation being scored, and how an
organisation's data is cut into clients changes what its clients learn per round.
Parties are named by their data, so a duplicate trains exactly like its twin and the
two get exactly equal values. Costs 2^m - 1 federations: the price of the truth, which
no deployment pays (and which sees every update).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from fedveil.learner.contribution.scenario import office_parties
from fedveil.learner.contribution.shapley import Coalition, exact_shapley
from fedveil.learner.data.datasets import PartyDataset
from fedveil.learner.federated_local import CaptionerRecipe, run_round
from fedveil.learner.models.loading import LoadedModel
from fedveil.learner.training.party import Party

UtilityFactory = Callable[[Party], Callable[[np.ndarray], float]]
"""party -> utility(adapter vector), e.g. a validation_utility over that party's model."""


@dataclass(frozen=True)
class CleartextShapley:
    """The exact Shapley values, every coalition's value (members joined by '+', '{}'
    for none), and the seconds: all coalitions, and the grand coalition's federation
    alone (a plain federation's cost, the benchmark's seconds baseline)."""

    shapley: dict[str, float]
    values: dict[str, float]
    seconds: float
    grand_seconds: float


def cleartext_shapley(
    loaded: LoadedModel,
    orgs: Mapping[str, PartyDataset],
    recipe: CaptionerRecipe,
    utility_of: UtilityFactory,
    offices: int,
    log: Callable[[str], None] | None = None,
) -> CleartextShapley:
    """Exact Shapley values of `orgs`, each split into `offices` clients, for
    `recipe.rounds` rounds of plaintext FedAvg."""
    values: dict[str, float] = {}
    grand = [float("nan")]
    started = time.perf_counter()

    def value(coalition: Coalition) -> float:
        members = [name for name in orgs if name in coalition] or list(orgs)[:1]
        grouped = office_parties(loaded, {m: orgs[m] for m in members}, offices, recipe)
        parties = [p for clients in grouped.values() for p in clients.values()]
        begun = time.perf_counter()
        if coalition:  # run_round, not run_federated: a duplicate shares its twin's names
            for r in range(recipe.rounds):
                run_round(parties, r)
        if len(coalition) == len(orgs):
            grand[0] = time.perf_counter() - begun
        v = float(utility_of(parties[0])(parties[0].global_vector))
        values["+".join(sorted(coalition)) or "{}"] = v
        if log is not None:
            log(f"truth {sorted(coalition)}: {v:.4f}")
        return v

    phi = exact_shapley(list(orgs), value)
    return CleartextShapley(phi, values, time.perf_counter() - started, grand[0])
