"""One membership audit of a released model against a canary registry.

Why one entry point: the claim "this training leaks at most epsilon" is checked by the
same steps whatever the protection -- score every canary with every applicable attack
(likelihood attacks need a model that yields log-probabilities, the generation-only
attacks only a `GenerateFn`), measure how well the scores separate the coins (AUC,
TPR at low FPR), turn the best guesses into empirical epsilon lower bounds next to the
accountant's epsilon, and compute each canary's exposure. The auditor's registry is
the only ground truth; the attacks never see the labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedveil.attacks.output.canaries import CanaryRegistry
from fedveil.attacks.output.empirical_epsilon import AuditVerdict, audit
from fedveil.attacks.output.generation import ProbeConfig, ProbeResult, generation_probe
from fedveil.attacks.output.generator import GenerateFn
from fedveil.attacks.output.language_model import LanguageModel
from fedveil.attacks.output.likelihood import LikelihoodConfig, canary_likelihood_scores
from fedveil.attacks.output.metrics import (
    BootstrapConfig,
    Exposure,
    MIAMetrics,
    exposure_exact,
    exposure_sampled,
    mia_metrics,
    scores_by_label,
)
from fedveil.errors import ConfigError


@dataclass(frozen=True)
class MembershipAuditConfig:
    """exposure_candidates: secrets sampled per canary to rank the true one among (spaces
    at most this large are enumerated exactly instead; 0 skips exposure). alpha: the audit's
    significance (bounds hold with probability 1 - alpha)."""

    likelihood: LikelihoodConfig = field(default_factory=LikelihoodConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    exposure_candidates: int = 256
    alpha: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.exposure_candidates < 0 or self.exposure_candidates == 1:
            raise ConfigError(
                f"exposure_candidates must be 0 or >= 2, got {self.exposure_candidates}"
            )
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must be in (0, 1), got {self.alpha}")


@dataclass(frozen=True, eq=False)
class AttackOutcome:
    attack: str
    scores: np.ndarray
    metrics: MIAMetrics
    verdict: AuditVerdict


@dataclass(frozen=True, eq=False)
class MembershipReport:
    labels: np.ndarray
    outcomes: dict[str, AttackOutcome]
    probe: ProbeResult | None
    exposures: list[Exposure] | None
    epsilon_claimed: float
    delta: float

    def mean_exposure(self, members: bool) -> float:
        if not self.exposures:
            return float("nan")
        chosen = self.labels if members else ~self.labels
        return float(
            np.mean([e.exposure for e, keep in zip(self.exposures, chosen, strict=True) if keep])
        )

    def summary(self) -> str:
        head = f"{'attack':<16} {'AUC [95% CI]':<24} {'TPR@1%FPR':<10} {'TPR@0.1%':<10}"
        lines = [head + " eps_lb (one-run / CP)"]
        for name, o in self.outcomes.items():
            m = o.metrics
            lines.append(
                f"{name:<16} {m.auc!s:<24} {m.tpr_at_1pct_fpr.value:<10.3f} "
                f"{m.tpr_at_01pct_fpr.value:<10.3f} {o.verdict.one_run.epsilon:.3f} / "
                f"{o.verdict.clopper_pearson.epsilon:.3f}"
            )
        lines.append(f"epsilon claimed: {self.epsilon_claimed:.3g} at delta {self.delta:g}")
        if self.probe is not None:
            lines.append(
                f"greedy extraction: members {self.probe.extraction_rate(True):.3f}, "
                f"non-members {self.probe.extraction_rate(False):.3f}"
            )
        if self.exposures:
            lines.append(
                f"mean exposure (bits): members {self.mean_exposure(True):.2f}, "
                f"non-members {self.mean_exposure(False):.2f}"
            )
        return "\n".join(lines)


def canary_exposures(
    lm: LanguageModel, registry: CanaryRegistry, n_candidates: int, *, seed: int = 0
) -> list[Exposure]:
    """Each canary's exposure under `lm`, ranking by total log-likelihood of the full text.

    Spaces with at most n_candidates + 1 values are enumerated (exact rank); larger ones are
    sampled uniformly (attacks.output.metrics.exposure_sampled says how the rank is estimated).
    """
    rng = np.random.default_rng([seed, 0xE4])
    texts: list[str] = []
    plans: list[tuple[int, int, bool]] = []  # (start, count, exact)
    for canary in registry:
        fmt = registry.format_of(canary)
        if fmt.secret.size <= n_candidates + 1:
            others = [s for s in fmt.secret.enumerate() if s != canary.secret]
            exact = True
        else:
            others = []
            while len(others) < n_candidates:
                others += [s for s in fmt.secret.sample(rng, n_candidates) if s != canary.secret]
            others = others[:n_candidates]
            exact = False
        plans.append((len(texts), len(others) + 1, exact))
        texts.append(canary.text)
        texts += [fmt.render(canary.subject, s) for s in others]
    logliks = lm.total_loglik(texts)
    out = []
    for canary, (start, count, exact) in zip(registry, plans, strict=True):
        secret, others_ll = logliks[start], logliks[start + 1 : start + count]
        if exact:
            out.append(exposure_exact(float(secret), others_ll))
        else:
            out.append(
                exposure_sampled(
                    float(secret), others_ll, registry.format_of(canary).secret.log2_size
                )
            )
    return out


def audit_membership(
    registry: CanaryRegistry,
    *,
    released: LanguageModel | None = None,
    generate: GenerateFn | None = None,
    reference: LanguageModel | None = None,
    epsilon_claimed: float = float("inf"),
    delta: float = 1e-5,
    config: MembershipAuditConfig | None = None,
) -> MembershipReport:
    """Every applicable attack on the registry's canaries, with metrics and the audit.

    released: white-box access (log-probabilities) enables the likelihood attacks and
    exposure; reference (the base model) adds the reference attack; generate (black-box
    text access) enables the SaMIA-style probe and the extraction rate.
    """
    if released is None and generate is None:
        raise ConfigError("give the released model (white box), a generate function, or both")
    config = config or MembershipAuditConfig()
    labels = registry.labels()
    if labels.all() or not labels.any():
        raise ConfigError("the registry needs both members and non-members to audit")
    scores: dict[str, np.ndarray] = {}
    if released is not None:
        scores.update(canary_likelihood_scores(released, registry, reference, config.likelihood))
    probe = None
    if generate is not None:
        probe = generation_probe(generate, registry, config.probe)
        scores.update(probe.scores)
    outcomes = {}
    for name, values in scores.items():
        members, non_members = scores_by_label(values, labels)
        outcomes[name] = AttackOutcome(
            name,
            values,
            mia_metrics(members, non_members, config.bootstrap),
            audit(values, labels, epsilon_claimed=epsilon_claimed, delta=delta, alpha=config.alpha),
        )
    exposures = None
    if released is not None and config.exposure_candidates:
        exposures = canary_exposures(
            released, registry, config.exposure_candidates, seed=config.seed
        )
    return MembershipReport(labels, outcomes, probe, exposures, epsilon_claimed, delta)
