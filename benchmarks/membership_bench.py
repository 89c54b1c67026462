"""Membership benchmark: what a released model's outputs reveal about planted canaries.

Why this shape: a protection is judged by what the attacker can still do against the
model it releases. For each protection, one party fine-tunes LoRA adapters of a tiny
GPT-2 (attacks/targets/canary_lm.py) on private texts with canaries planted by fair
coins; every membership attack scores every canary, and each record states how well
the scores separate the coins (AUC, TPR at 1% / 0.1% FPR with 95% bootstrap
intervals), the empirical epsilon lower bound from the same scores next to the
accountant's claim, and what the output filters change (greedy extraction of member
secrets before/after the full filter stack, its false-positive rate on benign
held-out prompts).

Usage: python benchmarks/membership_bench.py [--quick] [--json OUT]

Records (one per protection x attack):
  protection       none | dp-sgd (secagg rows are added by leakage_bench's caller)
  attack           loss | zlib | min_k | min_k_pp | reference (white box: log-probs)
                   samia_rouge_l | samia_ngram | samples_exact (black box: sampled text)
  auc, auc_low, auc_high; tpr_at_1pct_fpr(_low/_high); tpr_at_0.1pct_fpr(_low/_high)
                   with n_non_members non-members, every FPR below 1/n_non_members is
                   the TPR at zero false positives (min_fpr)
  epsilon_claimed  the accountant's epsilon at delta (inf without DP)
  epsilon_lower_bound      one-run audit (Steinke et al. 2023), 95%, Bonferroni over k
  epsilon_lower_bound_cp   Clopper-Pearson over thresholds, 95%, Bonferroni
  audit_passed     no lower bound above the claim
  extraction_rate  share of member secrets the greedy continuation of their prefix
                   starts with (units: spacing/casing ignored), no filter
  extraction_rate_filtered  the same with the "all" filter stack
  filter_fpr       share of benign held-out prompts whose greedy output "all" changed
  seconds          wall time of the attack (scoring or probing), not of training
  details          exposure means, held-out loss, per-filter reports, evasions, params
--quick: 64 canaries, 8 samples per prefix, 256 exposure candidates, 1000 bootstrap
resamples (about 1-2 minutes on 2 cores); full: 128 canaries, 16 samples, 1000
candidates, 2000 resamples.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from attacks.canaries import CanaryConfig
from attacks.empirical_epsilon import audit
from attacks.filters import (
    PII_PATTERNS,
    BlockList,
    baseline,
    measure_filter,
    output_evasions,
    prompt_evasions,
    standard_stacks,
)
from attacks.membership import LikelihoodConfig, canary_likelihood_scores
from attacks.membership_audit import canary_exposures
from attacks.membership_generate import HFGenerator, SamplingConfig
from attacks.membership_lm import LanguageModel, cpu_threads
from attacks.membership_samia import ProbeConfig, generation_probe
from attacks.mia_metrics import BootstrapConfig, mia_metrics, scores_by_label
from attacks.targets.canary_lm import CanaryLMConfig, CanaryScenario, TrainedModel, canary_scenario

NGRAM = 6
ATTACKER_TEMPERATURE = 0.5  # the attacker picks the sampling temperature (SaMIA uses < 1 too)


@dataclasses.dataclass(frozen=True)
class Settings:
    n_canaries: int
    n_samples: int
    exposure_candidates: int
    bootstrap: int

    @classmethod
    def of(cls, quick: bool) -> Settings:
        return cls(64, 8, 256, 1000) if quick else cls(128, 16, 1000, 2000)


def scenario_for(quick: bool) -> CanaryScenario:
    settings = Settings.of(quick)
    return canary_scenario(CanaryLMConfig(canaries=CanaryConfig(n_canaries=settings.n_canaries)))


def _heldout_loss(lm: LanguageModel, texts: list[str]) -> float:
    return -float(sum(s.logprobs.mean() for s in lm.score(texts)) / len(texts))


def _finite(x: float) -> float | str:
    return x if math.isfinite(x) else "inf"


def membership_records(
    scenario: CanaryScenario, trained: TrainedModel, quick: bool
) -> list[dict[str, Any]]:
    """Every attack on one released model; usable for any protection that yields one
    (the secagg rows pass the model their federation released)."""
    settings = Settings.of(quick)
    registry, tokenizer = scenario.registry, scenario.tokenizer
    labels = registry.labels()
    released = LanguageModel(trained.model, tokenizer)
    reference = LanguageModel(scenario.base, tokenizer)
    boot = BootstrapConfig(n_resamples=settings.bootstrap)

    start = time.perf_counter()
    white = canary_likelihood_scores(released, registry, reference, LikelihoodConfig())
    white_seconds = (time.perf_counter() - start) / len(white)

    generator = HFGenerator(
        trained.model,
        tokenizer,
        SamplingConfig(max_new_tokens=10, temperature=ATTACKER_TEMPERATURE),
    )
    probe_config = ProbeConfig(n_samples=settings.n_samples)
    start = time.perf_counter()
    probe = generation_probe(generator, registry, probe_config)
    black_seconds = (time.perf_counter() - start) / len(probe.scores)

    benign = [" ".join(t.split()[:3]) for t in scenario.heldout_texts[:64]]
    block_list = BlockList.from_registry(registry, pii=tuple(PII_PATTERNS))
    stacks = standard_stacks(
        tokenizer, block_list, private_texts=scenario.private_texts, ngram=NGRAM
    )
    before = baseline(generator, registry, benign, probe_config)
    filters = {
        name: measure_filter(generator, stack, registry, benign, before, probe_config).to_dict()
        for name, stack in stacks.items()
    }
    evasions = {
        "output_forms_after_prefix": {
            name: {
                k: v["blocked"]
                for k, v in output_evasions(stacks[name], tokenizer, registry).items()
            }
            for name in stacks
        },
        "output_forms_bare": {
            name: {
                k: v["blocked"]
                for k, v in output_evasions(
                    stacks[name], tokenizer, registry, context="none"
                ).items()
            }
            for name in stacks
        },
        "prompts_all_filters": prompt_evasions(generator, stacks["all"], registry),
    }
    exposures = canary_exposures(released, registry, settings.exposure_candidates)
    member_exposure = [e.exposure for e, m in zip(exposures, labels, strict=True) if m]
    other_exposure = [e.exposure for e, m in zip(exposures, labels, strict=True) if not m]
    details = {
        "n_canaries": len(registry),
        "n_members": int(labels.sum()),
        "delta": trained.delta,
        "mean_exposure_members": sum(member_exposure) / len(member_exposure),
        "mean_exposure_non_members": sum(other_exposure) / len(other_exposure),
        "exposure_log2_space": sorted({round(e.log2_space, 2) for e in exposures}),
        "heldout_loss": _heldout_loss(released, scenario.heldout_texts[:64]),
        "base_heldout_loss": _heldout_loss(reference, scenario.heldout_texts[:64]),
        "train_loss": trained.final_loss,
        "extraction_rate_non_members": probe.extraction_rate(members=False),
        "filters": filters,
        "evasions": evasions,
        "params": {
            "n_samples": settings.n_samples,
            "temperature": ATTACKER_TEMPERATURE,
            "ngram": NGRAM,
            "exposure_candidates": settings.exposure_candidates,
            "bootstrap": settings.bootstrap,
            "alpha": 0.05,
        },
    }
    records = []
    for name, scores in {**white, **probe.scores}.items():
        metrics = mia_metrics(*scores_by_label(scores, labels), boot).to_dict()
        verdict = audit(scores, labels, epsilon_claimed=trained.epsilon, delta=trained.delta)
        records.append(
            {
                "protection": trained.protection,
                "attack": name,
                "auc": metrics["auc"],
                "auc_low": metrics["auc_low"],
                "auc_high": metrics["auc_high"],
                "tpr_at_1pct_fpr": metrics["tpr_at_1pct_fpr"],
                "tpr_at_1pct_fpr_low": metrics["tpr_at_1pct_fpr_low"],
                "tpr_at_1pct_fpr_high": metrics["tpr_at_1pct_fpr_high"],
                "tpr_at_0.1pct_fpr": metrics["tpr_at_01pct_fpr"],
                "tpr_at_0.1pct_fpr_low": metrics["tpr_at_01pct_fpr_low"],
                "tpr_at_0.1pct_fpr_high": metrics["tpr_at_01pct_fpr_high"],
                "min_fpr": 1 / metrics["n_non_members"],
                "epsilon_claimed": _finite(trained.epsilon),
                "epsilon_lower_bound": verdict.one_run.epsilon,
                "epsilon_lower_bound_cp": verdict.clopper_pearson.epsilon,
                "audit_passed": verdict.passed,
                "extraction_rate": probe.extraction_rate(),
                "extraction_rate_filtered": filters["all"]["extraction_rate_after"],
                "filter_fpr": filters["all"]["benign_fpr"],
                "seconds": white_seconds if name in white else black_seconds,
                "details": details,
            }
        )
    return records


def run_membership(quick: bool) -> list[dict[str, Any]]:
    """Records for protection in {none, dp-sgd} on the canary LM."""
    with cpu_threads(1):
        scenario = scenario_for(quick)
        records = []
        for protection in ("none", "dp-sgd"):
            records += membership_records(scenario, scenario.released(protection), quick)
    return records


def _table(records: list[dict[str, Any]]) -> str:
    head = (
        f"{'protection':<10} {'attack':<14} {'AUC [95% CI]':<22} {'TPR@1%':<7} {'TPR@.1%':<7} "
        f"{'eps':<6} {'eps_lb':<7} {'cp_lb':<6} {'extr':<5} {'extr_f':<6} {'fpr':<5} {'s':<6}"
    )
    lines = [head]
    for r in records:
        eps = r["epsilon_claimed"]
        lines.append(
            f"{r['protection']:<10} {r['attack']:<14} "
            f"{r['auc']:.3f} [{r['auc_low']:.3f},{r['auc_high']:.3f}]  "
            f"{r['tpr_at_1pct_fpr']:<7.3f} {r['tpr_at_0.1pct_fpr']:<7.3f} "
            f"{eps if isinstance(eps, str) else f'{eps:.2f}':<6} {r['epsilon_lower_bound']:<7.3f} "
            f"{r['epsilon_lower_bound_cp']:<6.3f} {r['extraction_rate']:<5.2f} "
            f"{r['extraction_rate_filtered']:<6.2f} {r['filter_fpr']:<5.2f} {r['seconds']:<6.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 canaries, fewer samples")
    parser.add_argument("--json", type=Path, help="write the JSON list of records here")
    args = parser.parse_args(argv)
    print(
        f"# membership_bench{' --quick' if args.quick else ''}: Python "
        f"{platform.python_version()}, torch {torch.__version__}, 1 torch thread",
        flush=True,
    )
    start = time.perf_counter()
    records = run_membership(args.quick)
    print(_table(records))
    print(f"# {len(records)} records in {time.perf_counter() - start:.1f}s", flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(records, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
