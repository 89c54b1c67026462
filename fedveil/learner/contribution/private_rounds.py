"""Per-organisation contribution from protected subset aggregates (GTG-Shapley style).

Design (threat model first): every organisation is several office clients (datasets.
split_party_dataset), so even a coalition of one organisation is a secure aggregate of
at least `min_cohort` clients. Each round every client trains once from the global
adapter; then, for every non-empty coalition S of organisations, S's clients run a
secure aggregation with client-level DP (a `SubsetRelease`, e.g. runners.aggregators.
InProcessSecAgg), and the utility of global + that release is S's value this round.
The full coalition's release is the federation's own round, applied by every party.
Round Shapley values over the coalitions' values add up over the rounds.

What anyone sees: only DP releases of secure aggregates, never one client's update; the
server evaluates candidate models built from releases (post-processing, free). What it
costs: every client takes part in the 2^(m-1) releases of the coalitions that hold its
organisation each round, and each is charged to its ledger before the release, so a
client's epsilon is that of 2^(m-1) x rounds releases; the calibration must plan for
that many (planned_releases_per_client).

Why calibrated per client and not per coalition: client-level DP noise is relative to
one client's clip norm, so every coalition's release costs each member the same; a
coalition of two organisations does not dilute the cost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fedveil.errors import ConfigError
from fedveil.learner.contribution.shapley import Coalition, coalitions, shapley_values
from fedveil.learner.lora.aggregation import WeightedUpdate
from fedveil.learner.training.party import Party, PartyUpdate
from fedveil.secagg.dp import PrivacyLedger
from fedveil.secagg.protocol.dp import RoundDP


class SubsetRelease(Protocol):
    """One coalition's secure aggregate: (update, weight) per member client in, the
    (DP) mean out. `round_dp`: its DP terms, None without DP."""

    @property
    def round_dp(self) -> RoundDP | None: ...

    def __call__(self, updates: Sequence[WeightedUpdate], /) -> np.ndarray: ...


ReleaseFactory = Callable[[Sequence[str], int], SubsetRelease]
"""(member client ids, releases each member takes part in over the whole run: what the
DP calibration must plan for) -> the coalition's aggregate."""


def planned_releases_per_client(organisations: int, rounds: int) -> int:
    """Releases each client takes part in: one per coalition holding its organisation."""
    return 2 ** (organisations - 1) * rounds


@dataclass(frozen=True)
class ContributionRound:
    """One round: every coalition's value (utility of global + its release) and the
    round's Shapley values."""

    round_index: int
    values: dict[Coalition, float]
    shapley: dict[str, float]
    seconds: float


@dataclass(frozen=True, eq=False)
class ContributionRun:
    """Shapley values summed over rounds, the rounds, and what each client spent."""

    shapley: dict[str, float]
    rounds: tuple[ContributionRound, ...]
    epsilon: dict[str, float]
    """Per client, from its ledger (empty without DP)."""
    releases_per_round: int
    seconds: float
    global_vector: np.ndarray = field(repr=False)


def _check(organisations: Mapping[str, Sequence[Party]], min_cohort: int) -> None:
    if len(organisations) < 2:
        raise ConfigError("contribution needs at least two organisations")
    names = [p.name for clients in organisations.values() for p in clients]
    if len(set(names)) != len(names):
        raise ConfigError("client names must be unique across organisations")
    for org, clients in organisations.items():
        if len(clients) < min_cohort:
            raise ConfigError(
                f"organisation {org!r} has {len(clients)} clients; a coalition of it alone "
                f"must be a secure aggregate of at least {min_cohort} (split it into offices)"
            )


def private_contributions(
    organisations: Mapping[str, Sequence[Party]],
    rounds: int,
    make_release: ReleaseFactory,
    utility: Callable[[np.ndarray], float],
    ledgers: Mapping[str, PrivacyLedger] | None = None,
    min_cohort: int = 2,
) -> ContributionRun:
    """Train `rounds` rounds over every organisation's clients and score each
    organisation from its coalitions' protected releases (see the module docstring).

    `utility(adapter vector) -> float` (higher is better) scores a candidate global
    adapter, e.g. minus a validation loss; `ledgers` (client name -> ledger) are charged
    each release's events before it runs, and refuse once spent."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"rounds must be a positive int, got {rounds!r}")
    _check(organisations, min_cohort)
    orgs = list(organisations)
    members = {org: [p.name for p in organisations[org]] for org in orgs}
    parties = [p for org in orgs for p in organisations[org]]
    if ledgers is not None and set(ledgers) != {p.name for p in parties}:
        raise ConfigError("ledgers must name exactly the clients")
    grand = frozenset(orgs)
    planned = planned_releases_per_client(len(orgs), rounds)
    releases = {
        c: make_release([cid for org in orgs if org in c for cid in members[org]], planned)
        for c in coalitions(orgs)
        if c
    }
    started = time.perf_counter()
    history = []
    for r in range(rounds):
        begun = time.perf_counter()
        updates: dict[str, PartyUpdate] = {p.name: p.train_round(r) for p in parties}
        start = parties[0].global_vector
        values: dict[Coalition, float] = {frozenset(): float(utility(start))}
        means: dict[Coalition, np.ndarray] = {}
        for coalition, release in releases.items():
            ids = [cid for org in orgs if org in coalition for cid in members[org]]
            if ledgers is not None and release.round_dp is not None:
                events = release.round_dp.events()
                for cid in ids:
                    ledgers[cid].check(events)
                for cid in ids:
                    ledgers[cid].charge(events)
            mean = np.asarray(
                release([(updates[c].vector, updates[c].weight) for c in ids]), dtype=np.float64
            )
            means[coalition] = mean
            candidate = (start.astype(np.float64) + mean).astype(np.float32)
            values[coalition] = float(utility(candidate))
        for party in parties:
            party.apply_aggregate(means[grand])
        history.append(
            ContributionRound(r, values, shapley_values(orgs, values), time.perf_counter() - begun)
        )
    total = {org: sum(h.shapley[org] for h in history) for org in orgs}
    epsilon = {} if ledgers is None else {cid: led.spent_epsilon for cid, led in ledgers.items()}
    return ContributionRun(
        total,
        tuple(history),
        epsilon,
        len(releases),
        time.perf_counter() - started,
        parties[0].global_vector.copy(),
    )
