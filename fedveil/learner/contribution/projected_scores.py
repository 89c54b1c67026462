"""Per-organisation contribution from one DP number per organisation and round: each
client's update projected on the validation utility's gradient, summed in SecAgg+.

Why not release coalition models (learner.contribution.private_rounds, the baseline):
a coalition's release is a d-dimensional DP mean of a few clients, and client-level
noise of the same per-coordinate size in every one of d coordinates buries an update
of norm at most C (measured: rank agreement with exact Shapley falls to chance below
epsilon in the hundreds). The utility change a coalition's step causes is, to first
order, one number: <g, step>, g the gradient of the validation utility at the global
adapter. Releasing that number instead costs the same per-client sensitivity C and
carries one coordinate of noise, so the signal survives at a useful epsilon.

The protocol, every round r:
  1. the validator (whoever holds the validation scenes: the coordinator, a public set)
     computes g_r = grad utility(global_r) and broadcasts it with the round's model;
  2. every office client trains as usual, and the federation's own round
     (`train_aggregate`, the whole cohort) releases the mean step, as every round does;
  3. every client computes its own number s_i = <u, delta_i> - <u, mean step>, with
     u = g_r / |g_r| normalised by the client itself (so no direction a server sends
     can raise the sensitivity: |<u, x>| <= C for every unit u once clipped). The
     offset is public (the released step on the public direction) and only centres the
     numbers: what tells organisations apart is how far each one's steps lead beyond
     the federation's, and centred numbers need a clip, hence noise, several times
     smaller than raw ones (measured: the raw numbers share a large common part);
  4. per organisation, its clients run one SecAgg+ round over [s_i] with client-level
     DP (a `SubsetRelease` of dimension 1, e.g. runners.aggregators.InProcessSecAgg:
     the number clipped to C, the service's discrete Gaussian calibration for `rounds`
     releases), charged to each client's PrivacyLedger before it runs; at least
     `min_cohort` clients, so no release is one office's number.
Released beyond the federation's own rounds: the DP mean m_o of each organisation's
numbers, nothing else. Given the public step and direction, each release is a Gaussian
mechanism of sensitivity C in one client's data, so adaptive composition over the
rounds is what each ledger accounts. The scores are post-processing:
v_r(S) = |g_r| (offset_r + (sum over o in S of n_o m_o) / (sum of n_o)), the
first-order utility gain of coalition S's FedAvg step (n_o: o's public client count),
exact Shapley over the 2^m coalitions of that table, summed over rounds. Averaging, not
adding, the coalition's steps models FedAvg's dilution and makes a duplicate worth
nothing to a coalition that already holds its twin (equal m: the mean does not move).

Cost: one scalar release per client and round, so a client's epsilon is that of
`rounds` releases of sensitivity C, whatever the number of organisations; one gradient
of the validation loss per round for the validator.
Not modelled: curvature, and what a coalition would have learnt on its own trajectory
(the truth retrains every coalition from the start; these scores, like every
round-wise GTG-style score, value each step at the federation's current model, where a
domain already learnt is worth little more). How well they rank parties like exact
Shapley is measured, not assumed (benchmarks/contribution_bench.py).

Several `Scoring`s may share one training run (the benchmark's noise draws and
epsilons, each its own releases and ledgers); a deployment runs one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedveil.errors import ConfigError
from fedveil.learner.contribution.private_rounds import ReleaseFactory
from fedveil.learner.contribution.shapley import Coalition, coalitions, shapley_values
from fedveil.learner.lora.aggregation import WeightedUpdate
from fedveil.learner.training.party import Party, PartyUpdate
from fedveil.secagg.dp import PrivacyLedger
from fedveil.secagg.dp.events import DpEvent

Validator = Callable[[np.ndarray], tuple[float, np.ndarray]]
"""adapter vector -> (utility, gradient of the utility), e.g. utility.validation_gradient."""


@dataclass(frozen=True)
class Scoring:
    """One scoring of the run: how each organisation's release is made and whose ledgers
    it charges (client id -> ledger; None: not accounted, e.g. without DP)."""

    label: str
    make_release: ReleaseFactory
    ledgers: Mapping[str, PrivacyLedger] | None = None


@dataclass(frozen=True)
class ProjectedRound:
    """One round of one scoring: the released organisation means, the gradient's norm,
    and the round's Shapley values."""

    round_index: int
    gradient_norm: float
    offset: float
    released: dict[str, float]
    shapley: dict[str, float]


@dataclass(frozen=True)
class ScoringResult:
    """A scoring's Shapley values summed over rounds, its rounds, and each client's
    epsilon from its ledger (empty when not accounted)."""

    label: str
    shapley: dict[str, float]
    rounds: tuple[ProjectedRound, ...]
    epsilon: dict[str, float]


@dataclass(frozen=True, eq=False)
class ProjectedRun:
    """Every scoring's result, the validation utility before each round, and where the
    seconds went (training with its aggregate, the validator, the releases)."""

    results: tuple[ScoringResult, ...]
    utilities: tuple[float, ...]
    train_seconds: float
    gradient_seconds: float
    release_seconds: float
    global_vector: np.ndarray = field(repr=False)

    @property
    def seconds(self) -> float:
        return self.train_seconds + self.gradient_seconds + self.release_seconds


def coalition_values(
    gradient_norm: float,
    offset: float,
    released: Mapping[str, float],
    clients: Mapping[str, int],
) -> dict[Coalition, float]:
    """v(S) = |g| (offset + client-weighted mean of S's released means); v({}) = 0."""
    values: dict[Coalition, float] = {}
    for c in coalitions(list(released)):
        n = sum(clients[o] for o in c)
        mean = 0.0 if not c else sum(clients[o] * released[o] for o in c) / n
        values[c] = 0.0 if not c else gradient_norm * (offset + mean)
    return values


def check_scoring_inputs(
    organisations: Mapping[str, Mapping[str, Party]],
    rounds: int,
    scorings: Sequence[Scoring],
    min_cohort: int,
) -> list[str]:
    """Every client id, organisation by organisation; a ConfigError naming what is wrong
    (shared by the cumulative design, learner.contribution.cumulative_scores)."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"rounds must be a positive int, got {rounds!r}")
    if len(organisations) < 2:
        raise ConfigError("contribution needs at least two organisations")
    if not scorings:
        raise ConfigError("give at least one scoring")
    ids = [cid for clients in organisations.values() for cid in clients]
    if len(set(ids)) != len(ids):
        raise ConfigError("client ids must be unique across organisations")
    for org, clients in organisations.items():
        if len(clients) < min_cohort:
            raise ConfigError(
                f"organisation {org!r} has {len(clients)} clients; its release must be a "
                f"secure aggregate of at least {min_cohort} (split it into offices)"
            )
    for scoring in scorings:
        if scoring.ledgers is not None and set(scoring.ledgers) != set(ids):
            raise ConfigError(f"scoring {scoring.label!r}: ledgers must name exactly the clients")
    return ids


def _release(
    scoring: Scoring,
    release: Callable[[Sequence[WeightedUpdate]], np.ndarray],
    events: tuple[DpEvent, ...] | None,
    ids: Sequence[str],
    projections: Mapping[str, float],
) -> float:
    """One organisation's DP mean of its clients' projections, charged first."""
    if scoring.ledgers is not None and events is not None:
        for cid in ids:
            scoring.ledgers[cid].check(events)
        for cid in ids:
            scoring.ledgers[cid].charge(events)
    mean = release([(np.array([projections[cid]]), 1) for cid in ids])
    return float(np.asarray(mean, dtype=np.float64).reshape(-1)[0])


def projected_contributions(
    organisations: Mapping[str, Mapping[str, Party]],
    rounds: int,
    validator: Validator,
    train_aggregate: Callable[[Sequence[WeightedUpdate]], np.ndarray],
    scorings: Sequence[Scoring],
    min_cohort: int = 2,
) -> ProjectedRun:
    """Train `rounds` rounds over every organisation's clients (organisation -> client
    id -> party, all sharing one start adapter) and score every organisation from its
    released projections (see the module docstring).

    `train_aggregate` is the federation's own round over every client, in organisation
    order ((update, weight) in, mean update out). Each scoring's release factory is
    called once per organisation with its client ids and `rounds` (the releases each
    client takes part in); every release is charged to its clients' ledgers first,
    which refuse once spent (PrivacyBudgetExceededError)."""
    ids = check_scoring_inputs(organisations, rounds, scorings, min_cohort)
    orgs = list(organisations)
    members = {org: list(organisations[org]) for org in orgs}
    clients = {org: len(members[org]) for org in orgs}
    parties = {cid: organisations[org][cid] for org in orgs for cid in members[org]}
    releases = [
        {org: scoring.make_release(members[org], rounds) for org in orgs} for scoring in scorings
    ]
    history: list[list[ProjectedRound]] = [[] for _ in scorings]
    utilities = []
    train_s = gradient_s = release_s = 0.0
    for r in range(rounds):
        for k, scoring in enumerate(scorings):  # refuse an overspending round up front
            if scoring.ledgers is not None:
                for org in orgs:
                    round_dp = releases[k][org].round_dp
                    for cid in members[org]:
                        if round_dp is not None:
                            scoring.ledgers[cid].check(round_dp.events())
        begun = time.perf_counter()
        start = parties[ids[0]].global_vector
        utility, grad = validator(start.astype(np.float32))
        utilities.append(utility)
        norm = float(np.linalg.norm(grad))
        unit = grad / norm if norm > 0 else np.zeros_like(grad)
        gradient_s += time.perf_counter() - begun
        begun = time.perf_counter()
        updates: dict[str, PartyUpdate] = {cid: parties[cid].train_round(r) for cid in ids}
        mean = np.asarray(
            train_aggregate([(updates[cid].vector, updates[cid].weight) for cid in ids]),
            dtype=np.float64,
        )
        for party in parties.values():
            party.apply_aggregate(mean)
        train_s += time.perf_counter() - begun
        # the public offset (the federation's released step on the direction), then
        # each client's own number: its update on the direction, minus the offset
        offset = float(unit @ mean)
        projections = {
            cid: float(unit @ updates[cid].vector.astype(np.float64)) - offset for cid in ids
        }
        begun = time.perf_counter()
        for k, scoring in enumerate(scorings):
            released = {}
            for org in orgs:
                release = releases[k][org]
                events = None if release.round_dp is None else release.round_dp.events()
                released[org] = _release(scoring, release, events, members[org], projections)
            values = coalition_values(norm, offset, released, clients)
            row = ProjectedRound(r, norm, offset, released, shapley_values(orgs, values))
            history[k].append(row)
        release_s += time.perf_counter() - begun
    results = []
    for scoring, rows in zip(scorings, history, strict=True):
        total = {org: sum(row.shapley[org] for row in rows) for org in orgs}
        ledgers = scoring.ledgers
        epsilon = {} if ledgers is None else {cid: ledgers[cid].spent_epsilon for cid in ids}
        results.append(ScoringResult(scoring.label, total, tuple(rows), epsilon))
    return ProjectedRun(
        tuple(results),
        tuple(utilities),
        train_s,
        gradient_s,
        release_s,
        parties[ids[0]].global_vector.copy(),
    )
