"""Per-organisation contribution from one DP release per organisation at the end of the
run: the mean of its clients' whole-run updates, and each coalition's model evaluated.

Why a second design next to projected_scores: that one values each round's step at the
federation's current model, to first order, on one direction. Measured on the
benchmark's three configurations (noiseless, the same releases; benchmarks/README.md):
a coalition's value taken as the utility of the model its members' own updates would
have moved the start to, U(theta_0 + sum over rounds of S's mean step), ranks the four
organisations like exact Shapley over retrained coalitions in all three, with values
close to the truth's; evaluated on any public low-dimensional subspace instead (one
validation-gradient direction per round, per-domain gradients, the public mean steps,
the top 8-32 directions of per-batch validation gradients), it swaps two organisations
in at least one configuration. The signal is in the whole update, so the release has
the update's dimension d, and client-level noise in d coordinates is what decides how
many clients an organisation needs (contribution_cumulative_bench.py `--noise-of N`).

The protocol, after the federation's `rounds` rounds:
  1. every round the federation's own SecAgg+ round releases its mean step m_r, as
     always (public); every client keeps the sum of its own updates D_i (never sent);
  2. per organisation, its clients run one SecAgg+ round with client-level DP over
     c_i = D_i - M, M = sum of the m_r (public: it only centres the vectors, so the clip
     C bounds how far a client's run strays from the federation's, not its whole size),
     charged to each client's PrivacyLedger before it runs; at least `min_cohort`
     clients, so no release is one office's sum;
  3. scores are post-processing: v(S) = U(theta_0 + M + sum_{o in S} W_o r_o /
     sum_{o in S} W_o) - U(theta_0), r_o organisation o's released mean and W_o its
     clients' FedAvg weights summed (the sample count it declares: disclosed metadata,
     as FedAvg's weighting already needs), exact Shapley over the 2^m coalitions.
Released beyond the federation's rounds: each organisation's r_o, once (one release per
client in all). The truth retrains coalitions; this evaluates the coalitions' summed
steps taken on the federation's trajectory, which is how well it ranks, not assumed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedveil.learner.contribution.projected_scores import Scoring, check_scoring_inputs
from fedveil.learner.contribution.shapley import Coalition, coalitions, shapley_values
from fedveil.learner.lora.aggregation import WeightedUpdate
from fedveil.learner.training.party import Party

Utility = Callable[[np.ndarray], float]
"""adapter vector -> utility, e.g. utility.validation_utility."""


@dataclass(frozen=True)
class CumulativeResult:
    """One scoring: its Shapley values, every coalition's value (members joined by '+',
    '{}' for none), and each client's epsilon from its ledger (empty: not accounted)."""

    label: str
    shapley: dict[str, float]
    values: dict[str, float]
    epsilon: dict[str, float]


@dataclass(frozen=True, eq=False)
class CumulativeRun:
    """Every scoring's result, the start's utility, and where the seconds went (training
    with its aggregates, the releases, the coalition evaluations)."""

    results: tuple[CumulativeResult, ...]
    start_utility: float
    train_seconds: float
    release_seconds: float
    evaluation_seconds: float
    global_vector: np.ndarray = field(repr=False)

    @property
    def seconds(self) -> float:
        return self.train_seconds + self.release_seconds + self.evaluation_seconds


def coalition_models(
    start: np.ndarray,
    public_sum: np.ndarray,
    released: Mapping[str, np.ndarray],
    weights: Mapping[str, float],
) -> dict[Coalition, np.ndarray]:
    """theta_0 + M + the weighted mean of S's released means, per coalition S; the empty
    coalition is the start."""
    models: dict[Coalition, np.ndarray] = {}
    for c in coalitions(list(released)):
        if not c:
            models[c] = start
            continue
        total = sum(weights[o] for o in c)
        mean = sum(weights[o] * released[o] for o in c) / total
        models[c] = start + public_sum + mean
    return models


def _label(coalition: Coalition) -> str:
    return "+".join(sorted(coalition)) or "{}"


def cumulative_contributions(
    organisations: Mapping[str, Mapping[str, Party]],
    rounds: int,
    utility: Utility,
    train_aggregate: Callable[[Sequence[WeightedUpdate]], np.ndarray],
    scorings: Sequence[Scoring],
    min_cohort: int = 2,
) -> CumulativeRun:
    """Train `rounds` rounds over every organisation's clients (organisation -> client id
    -> party, all sharing one start adapter) and score every organisation from one
    release of its clients' centred whole-run updates (see the module docstring).

    `train_aggregate` is the federation's own round over every client, in organisation
    order. Each scoring's release factory is called once per organisation with its
    client ids and 1 (the releases each client takes part in) and must release vectors
    of the adapter's dimension; every release is charged to its clients' ledgers first,
    which refuse once spent (PrivacyBudgetExceededError)."""
    ids = check_scoring_inputs(organisations, rounds, scorings, min_cohort)
    orgs = list(organisations)
    members = {org: list(organisations[org]) for org in orgs}
    parties = {cid: organisations[org][cid] for org in orgs for cid in members[org]}
    start = parties[ids[0]].global_vector.astype(np.float64).copy()
    releases = [{org: s.make_release(members[org], 1) for org in orgs} for s in scorings]
    for k, scoring in enumerate(scorings):  # refuse an overspending run before training
        if scoring.ledgers is not None:
            for org in orgs:
                round_dp = releases[k][org].round_dp
                if round_dp is not None:
                    for cid in members[org]:
                        scoring.ledgers[cid].check(round_dp.events())
    begun = time.perf_counter()
    own = {cid: np.zeros_like(start) for cid in ids}
    weight = dict.fromkeys(ids, 0.0)
    public_sum = np.zeros_like(start)
    for r in range(rounds):
        updates = {cid: parties[cid].train_round(r) for cid in ids}
        mean = np.asarray(
            train_aggregate([(updates[cid].vector, updates[cid].weight) for cid in ids]),
            dtype=np.float64,
        )
        for party in parties.values():
            party.apply_aggregate(mean)
        public_sum += mean
        for cid in ids:
            own[cid] += updates[cid].vector.astype(np.float64)
            weight[cid] = float(updates[cid].weight)
    train_s = time.perf_counter() - begun
    weights = {org: sum(weight[cid] for cid in members[org]) for org in orgs}
    release_s = evaluation_s = 0.0
    start_utility = float(utility(start.astype(np.float32)))
    results = []
    for k, scoring in enumerate(scorings):
        begun = time.perf_counter()
        released = {}
        for org in orgs:
            release = releases[k][org]
            if scoring.ledgers is not None and release.round_dp is not None:
                events = release.round_dp.events()
                for cid in members[org]:
                    scoring.ledgers[cid].check(events)
                for cid in members[org]:
                    scoring.ledgers[cid].charge(events)
            centred = [(own[cid] - public_sum, 1) for cid in members[org]]
            released[org] = np.asarray(release(centred), dtype=np.float64).reshape(-1)
        release_s += time.perf_counter() - begun
        begun = time.perf_counter()
        models = coalition_models(start, public_sum, released, weights)
        values = {
            c: 0.0 if not c else float(utility(m.astype(np.float32))) - start_utility
            for c, m in models.items()
        }
        evaluation_s += time.perf_counter() - begun
        ledgers = scoring.ledgers
        results.append(
            CumulativeResult(
                scoring.label,
                shapley_values(orgs, values),
                {_label(c): v for c, v in values.items()},
                {} if ledgers is None else {cid: ledgers[cid].spent_epsilon for cid in ids},
            )
        )
    return CumulativeRun(
        tuple(results),
        start_utility,
        train_s,
        release_s,
        evaluation_s,
        parties[ids[0]].global_vector.copy(),
    )
