"""Contribution scores wired to real in-process SecAgg+ (the service's client DP
calibration and accountant): what `fedveil contributions` and the benchmark run, for
the projected design and the cumulative one.

Every organisation's release is a runners.aggregators.InProcessSecAgg of dimension 1
over its office clients, calibrated for `rounds` releases at the target epsilon (each
client takes part in one release a round) with the scalar clipped to `clip`; every
client has a PrivacyLedger of that budget, charged before each release. The
federation's own rounds are a SecAgg+ round over the whole cohort without DP (the
federation's training release is outside the scores' budget; add client DP there as
for any federation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from fedveil.errors import ConfigError
from fedveil.learner.contribution.cumulative_scores import (
    CumulativeRun,
    cumulative_contributions,
)
from fedveil.learner.contribution.projected_scores import (
    ProjectedRun,
    Scoring,
    projected_contributions,
)
from fedveil.learner.contribution.scenario import office_parties
from fedveil.learner.contribution.utility import validation_gradient, validation_utility
from fedveil.learner.data.datasets import PartyDataset, SceneExample
from fedveil.learner.federated_local import CaptionerRecipe
from fedveil.learner.models.loading import LoadedModel
from fedveil.learner.training.batches import encode_images
from fedveil.runners.aggregators import InProcessSecAgg
from fedveil.secagg.dp import PrivacyBudget, PrivacyLedger

BUDGET_SLACK = 1.01
"""Ledgers hold the target epsilon times this: the calibration lands just under the
target, and the accountant's composed figure may differ from it in the last digits."""


@dataclass(frozen=True)
class ScoringPlan:
    """One scoring to run: its label and target epsilon (None: SecAgg+ without DP)."""

    label: str
    epsilon: float | None


def check_privacy(epsilon: float | None, delta: float, clip: float) -> None:
    """One line per bad value (ConfigError)."""
    if epsilon is not None and not (math.isfinite(epsilon) and epsilon > 0):
        raise ConfigError(f"epsilon must be a positive number, got {epsilon}")
    if not (math.isfinite(delta) and 0 < delta < 1):
        raise ConfigError(f"delta must be in (0, 1), got {delta}")
    if not (math.isfinite(clip) and clip > 0):
        raise ConfigError(f"clip must be a positive number, got {clip}")


def make_scoring(
    plan: ScoringPlan, client_ids: Sequence[str], delta: float, clip: float, dimension: int = 1
) -> Scoring:
    """A scoring whose releases are InProcessSecAgg rounds of `dimension` (1: the
    projected design; the adapter's: the cumulative one), with ledgers."""
    check_privacy(plan.epsilon, delta, clip)
    epsilon = plan.epsilon

    def release(ids: Sequence[str], planned: int) -> InProcessSecAgg:
        return InProcessSecAgg(
            ids,
            dimension,
            rounds=planned,
            dp_epsilon=epsilon,
            dp_delta=delta,
            dp_clip_norm=clip,
        )

    ledgers = None
    if epsilon is not None:
        budget = PrivacyBudget(epsilon * BUDGET_SLACK, delta)
        ledgers = {cid: PrivacyLedger(budget, owner=cid) for cid in client_ids}
    return Scoring(plan.label, release, ledgers)


def secure_projected_run(
    loaded: LoadedModel,
    orgs: dict[str, PartyDataset],
    recipe: CaptionerRecipe,
    scenes: Sequence[SceneExample],
    offices: int,
    plans: Sequence[ScoringPlan],
    delta: float = 1e-5,
    clip: float = 1.0,
) -> ProjectedRun:
    """Split every organisation into `offices` clients, train `recipe.rounds` rounds of
    SecAgg+ FedAvg and run every plan's scoring over them (projected_scores)."""
    grouped = office_parties(loaded, orgs, offices, recipe)
    ids = [cid for clients in grouped.values() for cid in clients]
    first = next(iter(grouped[next(iter(grouped))].values()))
    pixels = encode_images(loaded.image_processor, [s.image for s in scenes])
    validator = validation_gradient(first, scenes, pixels)
    train = InProcessSecAgg(ids, first.layout.size, rounds=recipe.rounds)
    scorings = [make_scoring(plan, ids, delta, clip) for plan in plans]
    return projected_contributions(grouped, recipe.rounds, validator, train, scorings)


def secure_cumulative_run(
    loaded: LoadedModel,
    orgs: dict[str, PartyDataset],
    recipe: CaptionerRecipe,
    scenes: Sequence[SceneExample],
    offices: int,
    plans: Sequence[ScoringPlan],
    delta: float = 1e-5,
    clip: float = 8.0,
) -> CumulativeRun:
    """Split every organisation into `offices` clients, train `recipe.rounds` rounds of
    SecAgg+ FedAvg and run every plan's scoring of the cumulative design over them
    (cumulative_scores: one release of the adapter's dimension per organisation)."""
    grouped = office_parties(loaded, orgs, offices, recipe)
    ids = [cid for clients in grouped.values() for cid in clients]
    first = next(iter(grouped[next(iter(grouped))].values()))
    pixels = encode_images(loaded.image_processor, [s.image for s in scenes])
    utility = validation_utility(first, scenes, pixels)
    train = InProcessSecAgg(ids, first.layout.size, rounds=recipe.rounds)
    size = first.layout.size
    scorings = [make_scoring(plan, ids, delta, clip, dimension=size) for plan in plans]
    return cumulative_contributions(grouped, recipe.rounds, utility, train, scorings)
