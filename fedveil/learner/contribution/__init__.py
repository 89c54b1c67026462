"""Per-organisation contribution to the federated model (arXiv 2308.11217, II.E), from
protected subset aggregates only: each coalition's update is a secure aggregate of its
office clients with client-level DP, charged to every member's ledger."""

from fedveil.learner.contribution.private_rounds import (
    ContributionRound,
    ContributionRun,
    ReleaseFactory,
    SubsetRelease,
    planned_releases_per_client,
    private_contributions,
)
from fedveil.learner.contribution.shapley import (
    Coalition,
    coalitions,
    exact_shapley,
    shapley_values,
    spearman,
)
from fedveil.learner.contribution.utility import validation_utility

__all__ = [
    "Coalition",
    "ContributionRound",
    "ContributionRun",
    "ReleaseFactory",
    "SubsetRelease",
    "coalitions",
    "exact_shapley",
    "planned_releases_per_client",
    "private_contributions",
    "shapley_values",
    "spearman",
    "validation_utility",
]
