"""Leakage benchmark: what each protection lets an observer reconstruct, next to a blind guess.

Why this shape: a privacy claim is a pair of numbers, the attack's score on exactly the
view a protection leaves and the same score for a data-free guess. So every record is
(target, protection, n_clients, metric, value, baseline_value, seconds, params), and the
protected views come from real in-process rounds (fedveil.runners.aggregators: SecAgg+, CKKS,
SecAgg+ with client-level distributed DP) or a real DP-SGD step, never an ideal sum.
The measurements themselves live in attacks.measure.update_leakage, which `fedveil audit`
calls too, so the benchmark and the audit cannot drift apart.

Usage: python benchmarks/leakage_bench.py --kind update|output [--quick] [--json OUT]
       [--figures DIR]
(the attack kinds of attacks.families.Kind; output: the records of
benchmarks/membership_bench.py)

--kind update loops over every attacks.protections.Protection:
  none              one client's plain update (n_clients = 1)
  secagg, ckks      the weighted mean a SecAgg+ / CKKS round decodes, n = 3 and n = 10
  secagg+client-dp  the SecAgg+ mean of n = 3 and 10 clients, each clipped to C, with
                    distributed discrete Gaussian noise of std z*C on the sum
  dp-sgd            one client's DP-SGD update (per-example clip C, noise z*C, / batch)
with DPSettings() (C = 1, z = 1, delta = 1e-5); DP rows carry sigma, C, z, the SNR
||update|| / (noise std * sqrt(d)) and epsilon (one round, or the DP-SGD steps, no
subsampling). For each, attacks.measure.update_leakage's four measurements:
  (a) lenet-32: DLG and Inverting Gradients on the DLG LeNet (random init), 32x32
      shapes; psnr/ssim (baseline: mid-grey image), label_acc (baseline: uniform guess)
  labels: label_attribution_acc (who had which label; baseline 1/classes) and
      label_multiset_acc (the cohort's labels, which an aggregate reveals by design)
  (c) tiny-gpt2-lora-rR: DAGER span check / subspace ranking on a GPT-2 (64 wide,
      2 layers) with peft LoRA on c_attn, 3 local SGD steps; token precision/recall/F1
      and exact_seq (baseline: sentences from the same public generator). Plain
      updates are swept over R = 4, 8, 16, 32; the other protections use R = 16.
  (b) captioner: the ViT + GPT-2 captioner with peft LoRA (rank 16), one SGD gradient:
      caption tokens from the decoder's first c_attn LoRA (as (c)) and the image by
      Inverting Gradients given the true caption (psnr/ssim against grey).
--quick: lenet-32 by batch inversion (80 L-BFGS steps, 1 start), the captioner by IG 200
Adam steps, 2 single-client texts; full: batch inversion 300 x 4 restarts, DLG 300, IG 2000 x 4
(captioner 1000), 5 texts. Image attacks are scored on the best-recovered client
(attacks.measure.inversion_budget). On 2 cores quick takes about 1.5 minutes, full about 15.

--dager-sequence (with --kind update) runs only DAGER's second-layer sequence search
(attacks.update.text_sequence) against the layer-0 span check on the tiny GPT-2 (LoRA
rank 32 on both blocks' c_attn): one client's plain update over a batch of 1, 2 or 3
sentences (a gradient, a 3-step SGD delta at lr 0.05 and at the text recipe's lr 0.5),
8 draws each, and the real SecAgg+ mean of 10 one-sentence clients' gradients (3
draws); exact_seq and token_f1 against the prior baseline (the multi-round observer
has its own benchmark, benchmarks/multi_round_observer_bench.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from fedveil.attacks.families import Kind
from fedveil.attacks.measure.observe import leak_record
from fedveil.attacks.measure.records import LeakRecord, Record, records_to_json
from fedveil.attacks.measure.text_leakage import prior_baseline
from fedveil.attacks.measure.update_leakage import (
    RECORD_FUNCTIONS,
    UpdateLeakageSettings,
    text_recovery_records,
)
from fedveil.attacks.protections import PROTECTIONS, Aggregators
from fedveil.attacks.targets.tiny_lm import sentences, tiny_lm_target
from fedveil.attacks.update.base import Attack, LocalTraining, ObservedUpdate, Truth, UpdateKind
from fedveil.attacks.update.gradient_matching import torch_threads
from fedveil.attacks.update.local_training import client_update
from fedveil.attacks.update.run import run_attack
from fedveil.attacks.update.text_recovery import SpanCheck
from fedveil.attacks.update.text_sequence import SequenceSearch
from fedveil.attacks.views import aggregate_view, plain_view
from fedveil.runners.aggregators import real_aggregators

PLAIN_RANKS = (4, 8, 32)
"""The plain text-recovery rank sweep beyond R = 16 (which every protection gets)."""

COHORTS = (3, 10)
"""Cohort sizes of the aggregate views."""


def show(row: LeakRecord) -> LeakRecord:
    params = {k: v for k, v in row.params.items() if k != "figure"}
    print(
        f"{row.target:<22} {row.protection:<16} n={row.n_clients:<3} "
        f"{row.metric:<22} {row.value:>9.4f} (baseline {row.baseline_value:>8.4f}) "
        f"{row.seconds:>7.2f}s  {params}",
        flush=True,
    )
    return row


def inversion_records(quick: bool, figures: Path | None) -> list[LeakRecord]:
    """Every protection x measurement, plus the plain rank sweep of text recovery."""
    aggregators: Aggregators = real_aggregators()
    base = UpdateLeakageSettings(quick=quick, n_clients=max(COHORTS), figures=figures)
    rows: list[LeakRecord] = []
    for rank in PLAIN_RANKS:
        rows += [show(r) for r in text_recovery_records("none", base, aggregators, rank=rank)]
    for protection in PROTECTIONS:
        cohorts = (max(COHORTS),) if protection.spec.observed_alone else COHORTS
        for n in cohorts:
            settings = dataclasses.replace(base, n_clients=n)
            for function in RECORD_FUNCTIONS.values():
                rows += [show(r) for r in function(protection, settings, aggregators)]
    return rows


SEQUENCE_RECIPES: dict[str, LocalTraining | None] = {
    "gradient": None,
    "sgd3-lr0.05": LocalTraining(steps=3, lr=0.05),
    "sgd3-lr0.5": LocalTraining(steps=3, lr=0.5),
}
"""The plain updates the sequence search is measured on (None: one gradient)."""


def sequence_records(aggregators: Aggregators) -> list[LeakRecord]:
    """DAGER's layer-1 sequence search next to the layer-0 span check (see --dager-sequence)."""
    target, vocab = tiny_lm_target(rank=32)

    def prior(n: int, d: int) -> list[list[int]]:
        return [vocab.encode(s) for s in sentences(n, seed=10_000 + d)]

    def update(texts: list[list[int]], training: LocalTraining | None) -> ObservedUpdate:
        batch = vocab.pad(texts)
        kind = UpdateKind.GRADIENT if training is None else UpdateKind.DELTA
        vector = client_update(target, batch, batch, kind, training)
        return plain_view(vector, target.layout, kind=kind, training=training)

    attacks: tuple[Attack[Any], ...] = (SequenceSearch(), SpanCheck())
    cases: list[tuple[str, int, str, list[tuple[list[list[int]], ObservedUpdate]]]] = []
    for recipe, training in SEQUENCE_RECIPES.items():
        for size in (1, 2, 3):
            draws = [[vocab.encode(s) for s in sentences(size, seed=60 + 7 * d)] for d in range(8)]
            cases.append(("none", size, recipe, [(t, update(t, training)) for t in draws]))
    cohorts = [[vocab.encode(s) for s in sentences(10, seed=90 + d)] for d in range(3)]
    secure = []
    for texts in cohorts:
        updates = [update([ids], None).vector.numpy() for ids in texts]
        secure.append((texts, aggregate_view(updates, [1] * 10, target.layout, aggregators.secagg)))
    cases.append(("secagg", 10, "gradient", secure))
    rows: list[LeakRecord] = []
    for protection, size, recipe, views in cases:
        n = views[0][1].n_clients
        baseline = [prior_baseline(texts, prior, 20) for texts, _ in views]
        for attack in attacks:
            results = [run_attack(attack, v, target, truth=Truth(tokens=t)) for t, v in views]
            seconds = sum(r.seconds for r in results) / len(results)
            for metric in ("exact_seq", "token_f1"):
                rows.append(
                    show(
                        leak_record(
                            target.name, protection, n, metric,
                            sum(r.metrics[metric] for r in results) / len(results),
                            sum(b[metric] for b in baseline) / len(baseline), seconds,
                            attack=attack.name, sentences=size, update=recipe, draws=len(views),
                        )
                    )
                )  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--kind",
        choices=[Kind.UPDATE.value, Kind.OUTPUT.value],
        required=True,
        help="what the attacks observe (update: the inversion, labels and text families on "
        "each protection's view; output: the likelihood, generation and extraction families "
        "on the released model, filters and empirical epsilon)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer images, shorter attacks")
    parser.add_argument("--json", type=Path, help="write the JSON list of records here")
    parser.add_argument("--figures", type=Path, help="write original/reconstruction PNGs here")
    parser.add_argument(
        "--dager-sequence",
        action="store_true",
        help="with --kind update: only DAGER's second-layer sequence search vs the span check",
    )
    args = parser.parse_args(argv)
    print(
        f"# leakage_bench --kind {args.kind}{' --quick' if args.quick else ''}: "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        "1 torch thread",
        flush=True,
    )
    start = time.perf_counter()
    records: list[Record]
    with torch_threads(1):  # tiny models: more threads only spin-wait (see torch_threads)
        if Kind(args.kind) is Kind.OUTPUT:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from membership_bench import run_membership

            records = list(run_membership(args.quick))
        elif args.dager_sequence:
            records = list(sequence_records(real_aggregators()))
        else:
            records = list(inversion_records(args.quick, args.figures))
    print(f"# {len(records)} records in {time.perf_counter() - start:.1f}s", flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(records_to_json(records), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
