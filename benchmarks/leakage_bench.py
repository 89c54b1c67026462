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
--quick: DLG 60 L-BFGS steps, IG 300 (captioner 200) Adam steps, 2 single-client texts;
full: 300, 2000 (1000), 5. On 2 cores quick takes about 1.5 minutes, full about 15.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import torch

from fedveil.attacks.families import Kind
from fedveil.attacks.measure.records import LeakRecord, Record, records_to_json
from fedveil.attacks.measure.update_leakage import (
    RECORD_FUNCTIONS,
    UpdateLeakageSettings,
    text_recovery_records,
)
from fedveil.attacks.protections import PROTECTIONS, Aggregators
from fedveil.attacks.update.gradient_matching import torch_threads
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
        else:
            records = list(inversion_records(args.quick, args.figures))
    print(f"# {len(records)} records in {time.perf_counter() - start:.1f}s", flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(records_to_json(records), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
