"""Membership benchmark: what a federation's released model reveals about planted canaries.

Why this shape: a protection is judged by what the attacker can still do against the
model it releases. Three parties fine-tune LoRA adapters of a tiny GPT-2 by FedAvg
(attacks/targets/canary_federation.py); party 0's private texts carry canaries planted
by fair coins, and the adapter mean of every round is computed by the real round of the
protection (fedveil.runners.aggregators.real_aggregators). Every output attack then scores every
canary (attacks/measure/output_leakage.py, the same code `fedveil audit` runs); each record
states how well the scores separate the coins (AUC, TPR at 1% / 0.1% FPR with 95%
bootstrap intervals, a ROC curve), the empirical epsilon lower bound from the same
scores next to the accountant's claim, and what the output filters change.

Usage: python benchmarks/membership_bench.py [--quick] [--json OUT]

Records (one per protection x attack):
  protection       none | secagg | ckks | secagg+client-dp | dp-sgd (DP-SGD locally,
                   SecAgg+ mean)
  attack           loss | zlib | min_k | min_k_pp | reference (white box: log-probs)
                   samia_rouge_l | samia_ngram | samples_exact (black box: sampled text)
  attack_family    likelihood | generation
  auc, auc_low, auc_high; tpr_at_1pct_fpr(_low/_high); tpr_at_0.1pct_fpr(_low/_high)
                   with n_non_members non-members, every FPR below 1/n_non_members is
                   the TPR at zero false positives (min_fpr)
  roc              {"fpr": [...], "tpr": [...]}, at most 64 points, log-spaced in FPR
  epsilon_claimed  the accountant's epsilon of party 0 at delta (inf without DP)
  epsilon_lower_bound      one-run audit (Steinke et al. 2023), 95%, Bonferroni over k
  epsilon_lower_bound_cp   Clopper-Pearson over thresholds, 95%, Bonferroni
  audit_passed     no lower bound above the claim
  extraction_rate  share of member secrets the greedy continuation of their prefix
                   starts with (units: spacing/casing ignored), no filter
  extraction_rate_filtered  the same with the "all" filter stack
  filter_fpr       share of benign held-out prompts whose greedy output "all" changed
  seconds          wall time of the attack (scoring or probing), not of training
  train_seconds    wall time of the federation's training under this protection
  details          exposure means, held-out loss, per-filter reports, evasions, params
--quick: 48 canaries, FederationSettings.quick() (3 parties, 20 rounds x 15 local
epochs; DP-SGD 2 local epochs a round), 8 samples per prefix, 256 exposure
candidates, 1000 bootstrap resamples (about 3 minutes on one thread); full: 128
canaries, FederationSettings.full(), 16 samples, 1000 candidates, 2000 resamples.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

from fedveil.attacks.measure.output_leakage import OutputLeakageSettings, output_leakage_records
from fedveil.attacks.measure.records import OutputRecord, records_to_json
from fedveil.attacks.output.language_model import cpu_threads
from fedveil.attacks.protections import PROTECTIONS
from fedveil.attacks.targets.canary_federation import (
    FederationSettings,
    federation_scenario,
    release,
)


def run_membership(quick: bool) -> list[OutputRecord]:
    """Records for every protection, each on the model its federation released."""
    from fedveil.runners.aggregators import real_aggregators  # the composition root's real rounds

    federation = FederationSettings.quick() if quick else FederationSettings.full()
    attack = OutputLeakageSettings.quick() if quick else OutputLeakageSettings.full()
    aggregators = real_aggregators()
    with cpu_threads(1):
        scenario = federation_scenario(quick)
        records: list[OutputRecord] = []
        for protection in PROTECTIONS:
            trained = release(protection, scenario, aggregators, federation)
            records += output_leakage_records(scenario, trained, attack)
    return records


def _num(value: float | None, width: int, digits: int = 2) -> str:
    text = "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"
    return f"{text:<{width}}"


def _table(records: list[OutputRecord]) -> str:
    head = (
        f"{'protection':<16} {'attack':<14} {'AUC [95% CI]':<22} {'TPR@1%':<7} {'TPR@.1%':<7} "
        f"{'eps':<6} {'eps_lb':<7} {'cp_lb':<6} {'extr':<5} {'extr_f':<6} {'fpr':<5} {'s':<6} "
        f"{'train_s':<7}"
    )
    lines = [head]
    for r in records:
        eps = r.epsilon_claimed
        lines.append(
            f"{r.protection:<16} {r.attack:<14} "
            f"{r.auc:.3f} [{r.auc_low:.3f},{r.auc_high:.3f}]  "
            f"{r.tpr_at_1pct_fpr:<7.3f} {r.tpr_at_01pct_fpr:<7.3f} "
            f"{'inf' if math.isinf(eps) else f'{eps:.2f}':<6} {r.epsilon_lower_bound:<7.3f} "
            f"{r.epsilon_lower_bound_cp:<6.3f} {r.extraction_rate:<5.2f} "
            f"{_num(r.extraction_rate_filtered, 6)} {_num(r.filter_fpr, 5)} "
            f"{r.seconds:<6.2f} {_num(r.train_seconds, 7, 1)}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="48 canaries, fewer samples")
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
        args.json.write_text(json.dumps(records_to_json(records), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
