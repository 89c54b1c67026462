"""What a released model's outputs reveal about planted canaries: one record per attack.

Why here and not in the benchmark: the membership benchmark and `fedveil audit` must
judge a protection by the same code. For one released model (a single party's, or the
federation's under any protection: attacks.targets.canary_federation), every registered
output attack (attacks.registry) scores every canary, and each record states how
well the scores separate the fair coins (AUC, TPR at 1% / 0.1% FPR with bootstrap
intervals, a downsampled ROC curve for log-log plots), the empirical epsilon lower
bound next to the accountant's claim (at alpha / k, k the attacks of its family:
`epsilon_verdicts`), and what the output filters change (greedy extraction of member
secrets before/after the full "all" stack, its false-positive rate on benign held-out
prompts). The record is attacks.measure.records.OutputRecord.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedveil.attacks.measure.records import (
    JSONObject,
    OutputDetails,
    OutputRecord,
    Roc,
    finite_json,
)
from fedveil.attacks.output.empirical_epsilon import AuditVerdict, audit
from fedveil.attacks.output.filters import (
    PII_PATTERNS,
    BlockList,
    baseline,
    measure_filter,
    output_evasions,
    prompt_evasions,
    standard_stacks,
)
from fedveil.attacks.output.generation import ProbeConfig
from fedveil.attacks.output.generator import HFGenerator, SamplingConfig
from fedveil.attacks.output.language_model import LanguageModel
from fedveil.attacks.output.membership import canary_exposures
from fedveil.attacks.output.metrics import BootstrapConfig, mia_metrics, roc_curve, scores_by_label
from fedveil.attacks.output.reference_mia import (
    REFERENCE_MIA_ATTACKS,
    attach_references,
    attached,
)
from fedveil.attacks.output.references import references_for
from fedveil.attacks.output.target import OutputAttack, OutputTarget
from fedveil.attacks.registry import MEMBERSHIP_FAMILIES, Kind, available, output_attack
from fedveil.attacks.targets.canary_lm import CanaryScenario, TrainedModel
from fedveil.errors import ConfigError

NGRAM = 6
EPSILON_ALPHA = 0.05
"""The family-wise level of a membership cell's empirical-epsilon check (1 - confidence)."""
ATTACKER_TEMPERATURE = 0.5  # the attacker picks the sampling temperature (SaMIA uses < 1 too)
ROC_POINTS = 64


@dataclass(frozen=True)
class OutputLeakageSettings:
    """How hard the attacker and the measurement try.

    n_samples: continuations sampled per canary prefix; exposure_candidates: candidates
    ranked per canary for exposure; bootstrap: resamples of each interval; filters:
    measure the filter stacks (extraction after filtering, benign FPR); evasions: also
    try the evasive output forms and prompts against them (needs filters);
    reference_models: K, the auditor's OUT models RMIA and offline LiRA are calibrated by
    (attacks.output.references: trained once per process by the release's own recipe,
    shared by every protection row; 0: neither attack runs, the family is the five
    base-model attacks). Quick 2 (the cost of two more plain federations per audit),
    full 4.
    """

    n_samples: int = 8
    exposure_candidates: int = 256
    bootstrap: int = 1000
    filters: bool = True
    evasions: bool = True
    reference_models: int = 2

    def __post_init__(self) -> None:
        checks = (("n_samples", 1), ("exposure_candidates", 1), ("bootstrap", 10))
        for name, low in (*checks, ("reference_models", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(
                    f"OutputLeakageSettings.{name} must be an int >= {low}, got {value!r}"
                )
        if self.evasions and not self.filters:
            raise ConfigError("OutputLeakageSettings.evasions=True needs filters=True")

    @classmethod
    def quick(cls) -> OutputLeakageSettings:
        return cls(n_samples=8, exposure_candidates=256, bootstrap=1000, reference_models=2)

    @classmethod
    def full(cls) -> OutputLeakageSettings:
        return cls(n_samples=16, exposure_candidates=1000, bootstrap=2000, reference_models=4)


def downsampled_roc(members: np.ndarray, non_members: np.ndarray, points: int = ROC_POINTS) -> Roc:
    """At most `points` (fpr, tpr) pairs of the empirical ROC, dense at low FPR.

    Why log-spaced: the audit draws log-log ROC curves, where the informative part is
    FPR near 1/n_non_members; for each grid FPR the curve's highest TPR at or below it
    is kept (a step function is never interpolated upwards).
    """
    fpr, tpr = roc_curve(members, non_members)
    if fpr.size <= points:
        return Roc(fpr.tolist(), tpr.tolist())
    low = max(1 / non_members.size, 1e-6)
    grid = np.concatenate([[0.0], np.geomspace(low, 1.0, points - 1)])
    keep = sorted({int(np.searchsorted(fpr, f, side="right")) - 1 for f in grid})
    return Roc(fpr[keep].tolist(), tpr[keep].tolist())


def epsilon_verdicts(
    scores: Mapping[str, np.ndarray],
    families: Mapping[str, str],
    labels: np.ndarray,
    *,
    epsilon_claimed: float,
    delta: float,
    alpha: float = EPSILON_ALPHA,
) -> dict[str, AuditVerdict]:
    """Each attack's empirical-epsilon audit at alpha / k, k the attacks of its family.

    Why divided: a membership cell reports the largest one-run lower bound of its k
    attacks (attacks.audit.output_cells.mia_cell); each bound alone exceeds a true claim
    with probability at most alpha, their maximum up to k alpha. At alpha / k each
    (Bonferroni) the maximum keeps alpha whatever the attacks' dependence. The
    certifiable bound each verdict carries is computed at the same corrected level, so a
    claim the corrected audit cannot reach is still reported inconclusive."""
    k = Counter(families[name] for name in scores)
    return {
        name: audit(
            values,
            labels,
            epsilon_claimed=epsilon_claimed,
            delta=delta,
            alpha=alpha / k[families[name]],
        )
        for name, values in scores.items()
    }


def _heldout_loss(lm: LanguageModel, texts: list[str]) -> float:
    return -float(sum(s.logprobs.mean() for s in lm.score(texts)) / len(texts))


def _filter_details(
    scenario: CanaryScenario,
    generator: HFGenerator,
    probe_config: ProbeConfig,
    settings: OutputLeakageSettings,
) -> tuple[JSONObject, JSONObject]:
    """(per-stack filter reports, evasion results); empty when filters are off."""
    if not settings.filters:
        return {}, {}
    registry, tokenizer = scenario.registry, scenario.tokenizer
    benign = [" ".join(t.split()[:3]) for t in scenario.heldout_texts[:64]]
    block_list = BlockList.from_registry(registry, pii=tuple(PII_PATTERNS))
    stacks = standard_stacks(
        tokenizer, block_list, private_texts=scenario.private_texts, ngram=NGRAM
    )
    before = baseline(generator, registry, benign, probe_config)
    filters: JSONObject = {
        name: measure_filter(generator, stack, registry, benign, before, probe_config).to_dict()
        for name, stack in stacks.items()
    }
    if not settings.evasions:
        return filters, {}

    def blocked(context: str) -> JSONObject:
        return {
            name: {
                k: v["blocked"]
                for k, v in output_evasions(stack, tokenizer, registry, context=context).items()
            }
            for name, stack in stacks.items()
        }

    after_prefix, bare = blocked("prefix"), blocked("none")
    prompts: JSONObject = dict(prompt_evasions(generator, stacks["all"], registry))
    evasions: JSONObject = {
        "output_forms_after_prefix": after_prefix,
        "output_forms_bare": bare,
        "prompts_all_filters": prompts,
    }
    return filters, evasions


def _applies(attack: OutputAttack, target: OutputTarget) -> bool:
    """The registry's access check, and for RMIA / LiRA attached reference models."""
    if attack.name in REFERENCE_MIA_ATTACKS and not attached(target):
        return False
    return attack.applies_to(target)


def _attach_references(
    scenario: CanaryScenario, trained: TrainedModel, target: OutputTarget, count: int
) -> JSONObject:
    """Attach `count` reference models to `target` (none for 0); what the record says
    about them (params: how many, by which recipe, the training seconds this job paid:
    0 when an earlier row of the same process trained them)."""
    if count == 0:
        return {"reference_models": 0}
    trained_refs = references_for(scenario, trained, count)
    attach_references(target, trained_refs.references)
    return {
        "reference_models": count,
        "reference_recipe": trained_refs.recipe,
        "reference_seconds": round(trained_refs.seconds, 3),
    }


def output_leakage_records(
    scenario: CanaryScenario,
    trained: TrainedModel,
    settings: OutputLeakageSettings | None = None,
) -> list[OutputRecord]:
    """Every registered output attack on one released model, one record each."""
    settings = settings or OutputLeakageSettings()
    registry, tokenizer = scenario.registry, scenario.tokenizer
    labels = registry.labels()
    released = LanguageModel(trained.model, tokenizer)
    reference = LanguageModel(scenario.base, tokenizer)
    generator = HFGenerator(
        trained.model,
        tokenizer,
        SamplingConfig(max_new_tokens=10, temperature=ATTACKER_TEMPERATURE),
    )
    probe_config = ProbeConfig(n_samples=settings.n_samples)
    target = OutputTarget(registry, released, reference, generator, probe_config=probe_config)
    calibration = _attach_references(scenario, trained, target, settings.reference_models)
    attacks = [output_attack(n) for n in available(kind=Kind.OUTPUT)]
    scores, seconds, families = {}, {}, {}
    for family in MEMBERSHIP_FAMILIES:
        chosen = [a for a in attacks if a.family == family and _applies(a, target)]
        start = time.perf_counter()
        for attack in chosen:
            scores[attack.name] = np.asarray(attack.score(target), dtype=np.float64)
            families[attack.name] = family
        for attack in chosen:  # the shared pass's time, split evenly
            seconds[attack.name] = (time.perf_counter() - start) / len(chosen)
    probe = target.probe()

    filters, evasions = _filter_details(scenario, generator, probe_config, settings)
    exposures = canary_exposures(released, registry, settings.exposure_candidates)
    member_exposure = [e.exposure for e, m in zip(exposures, labels, strict=True) if m]
    other_exposure = [e.exposure for e, m in zip(exposures, labels, strict=True) if not m]
    details = OutputDetails(
        n_canaries=len(registry),
        n_members=int(labels.sum()),
        delta=trained.delta,
        mean_exposure_members=sum(member_exposure) / len(member_exposure),
        mean_exposure_non_members=sum(other_exposure) / len(other_exposure),
        exposure_log2_space=sorted({round(e.log2_space, 2) for e in exposures}),
        heldout_loss=_heldout_loss(released, scenario.heldout_texts[:64]),
        base_heldout_loss=_heldout_loss(reference, scenario.heldout_texts[:64]),
        train_loss=trained.final_loss,
        extraction_rate_non_members=probe.extraction_rate(members=False),
        filters=filters,
        evasions=evasions,
        params={
            "n_samples": settings.n_samples,
            "temperature": ATTACKER_TEMPERATURE,
            "ngram": NGRAM,
            "exposure_candidates": settings.exposure_candidates,
            "bootstrap": settings.bootstrap,
            "alpha": EPSILON_ALPHA,
            # the empirical-epsilon check's Bonferroni: each attack's bound at alpha / k
            "epsilon_attacks_per_family": {
                str(f): n for f, n in Counter(families.values()).items()
            },
            **calibration,
            # per-record risk (attacks.audit.output_cells.PER_RECORD_KEY): every canary
            # with the scores its AUC was computed from, so the report can rank records
            "per_record": {
                "canaries": [
                    {
                        "text": canary.text,
                        "member": bool(member),
                        "extracted": bool(extracted),
                        "exposure": finite_json(float(exposure.exposure)),
                    }
                    for canary, member, extracted, exposure in zip(
                        registry, labels, probe.extracted, exposures, strict=True
                    )
                ],
                "scores": {
                    name: [finite_json(float(v)) for v in values] for name, values in scores.items()
                },
            },
        },
    )
    boot = BootstrapConfig(n_resamples=settings.bootstrap)
    all_stack = filters.get("all", {})
    if not isinstance(all_stack, dict):
        raise TypeError(f"the 'all' filter report must be a dict, got {all_stack!r}")
    verdicts = epsilon_verdicts(
        scores, families, labels, epsilon_claimed=trained.epsilon, delta=trained.delta
    )
    records = []
    for name, values in scores.items():
        members, non_members = scores_by_label(values, labels)
        metrics = mia_metrics(members, non_members, boot).to_dict()
        verdict = verdicts[name]
        filtered, fpr = all_stack.get("extraction_rate_after"), all_stack.get("benign_fpr")
        records.append(
            OutputRecord(
                protection=trained.protection,
                attack=name,
                attack_family=families[name],
                auc=float(metrics["auc"]),
                auc_low=float(metrics["auc_low"]),
                auc_high=float(metrics["auc_high"]),
                tpr_at_1pct_fpr=float(metrics["tpr_at_1pct_fpr"]),
                tpr_at_1pct_fpr_low=float(metrics["tpr_at_1pct_fpr_low"]),
                tpr_at_1pct_fpr_high=float(metrics["tpr_at_1pct_fpr_high"]),
                tpr_at_01pct_fpr=float(metrics["tpr_at_01pct_fpr"]),
                tpr_at_01pct_fpr_low=float(metrics["tpr_at_01pct_fpr_low"]),
                tpr_at_01pct_fpr_high=float(metrics["tpr_at_01pct_fpr_high"]),
                min_fpr=1 / metrics["n_non_members"],
                epsilon_claimed=float(trained.epsilon),
                epsilon_lower_bound=float(verdict.one_run.epsilon),
                epsilon_lower_bound_cp=float(verdict.clopper_pearson.epsilon),
                audit_passed=bool(verdict.passed),
                extraction_rate=float(probe.extraction_rate()),
                extraction_rate_filtered=None if filtered is None else float(filtered),
                filter_fpr=None if fpr is None else float(fpr),
                seconds=seconds[name],
                train_seconds=trained.train_seconds,
                roc=downsampled_roc(members, non_members),
                details=details,
                epsilon_certifiable=float(verdict.certifiable),
            )
        )
    return records
