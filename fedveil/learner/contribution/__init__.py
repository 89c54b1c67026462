"""Per-organisation contribution to the federated model (arXiv 2308.11217, II.E), from
protected releases only. Three designs: projected_scores (one DP number per organisation
and round: its clients' updates projected on the validation gradient, summed in SecAgg+;
cheap in noise, first-order), cumulative_scores (one d-dimensional DP release per
organisation at the end, coalition models evaluated: ranks like exact Shapley where the
organisations have enough clients for d-dimensional noise) and private_rounds (every
coalition's model as a DP secure aggregate each round: the baseline, whose noise buries
the signal). truth: exact Shapley in the clear, the reference for all three."""

from fedveil.learner.contribution.cumulative_scores import (
    CumulativeResult,
    CumulativeRun,
    coalition_models,
    cumulative_contributions,
)
from fedveil.learner.contribution.private_rounds import (
    ContributionRound,
    ContributionRun,
    ReleaseFactory,
    SubsetRelease,
    planned_releases_per_client,
    private_contributions,
)
from fedveil.learner.contribution.projected_scores import (
    ProjectedRound,
    ProjectedRun,
    Scoring,
    ScoringResult,
    coalition_values,
    projected_contributions,
)
from fedveil.learner.contribution.shapley import (
    Coalition,
    coalitions,
    exact_shapley,
    shapley_values,
    spearman,
)
from fedveil.learner.contribution.utility import validation_gradient, validation_utility

__all__ = [
    "Coalition",
    "ContributionRound",
    "ContributionRun",
    "CumulativeResult",
    "CumulativeRun",
    "ProjectedRound",
    "ProjectedRun",
    "ReleaseFactory",
    "Scoring",
    "ScoringResult",
    "SubsetRelease",
    "coalition_models",
    "coalition_values",
    "coalitions",
    "cumulative_contributions",
    "exact_shapley",
    "planned_releases_per_client",
    "private_contributions",
    "projected_contributions",
    "shapley_values",
    "spearman",
    "validation_gradient",
    "validation_utility",
]
