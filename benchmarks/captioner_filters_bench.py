"""Utility cost of the output blacklisting filters on the demo-scale federated captioner.

Why: the filters were measured on a causal LM; this trains the demo's federated LoRA
captioner in process (CaptionerRecipe defaults unless --rounds / --samples say
otherwise, plaintext weighted mean, the cached open base model) and reports per filter
stack: mean and per-domain concept recall, the share of full captions changed against
the unfiltered run, and the added ms per generated token (1 torch thread; wall clock on
a shared machine).

    .venv/bin/python benchmarks/captioner_filters_bench.py [--rounds 20] [--ngram 4] \
        [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from fedveil.attacks.measure.captioner_filters import (
    captioner_stacks,
    filter_utility_reports,
    secret_block_list,
    training_texts,
)
from fedveil.attacks.output.language_model import cpu_threads
from fedveil.learner.data.datasets import make_party_datasets, make_test_set
from fedveil.learner.federated_local import CaptionerRecipe, make_parties, run_federated
from fedveil.learner.lora.codec import load_adapter_vector
from fedveil.learner.models import load_base_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=CaptionerRecipe().rounds)
    parser.add_argument("--samples", type=int, default=None, help="samples per party")
    parser.add_argument("--test-samples", type=int, default=None)
    parser.add_argument("--ngram", type=int, action="append", help="n of the n-gram filter")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    recipe = CaptionerRecipe(rounds=args.rounds)
    data = recipe.data
    if args.samples is not None:
        data = dataclasses.replace(data, samples_per_party=args.samples)
    if args.test_samples is not None:
        data = dataclasses.replace(data, test_samples=args.test_samples)
    recipe = dataclasses.replace(
        recipe, data=data, train=dataclasses.replace(recipe.train, progress=False)
    )
    started = time.perf_counter()
    with cpu_threads(1):
        base = load_base_model(progress=False)
        datasets = make_party_datasets(recipe.data)
        test_set = make_test_set(recipe.data)
        parties = make_parties(base, datasets, recipe)
        run_federated(parties, recipe.rounds, progress=False)
    train_seconds = time.perf_counter() - started
    party = parties[0]
    load_adapter_vector(party.model, party.layout, party.global_vector)
    texts = training_texts(datasets)
    block_list = secret_block_list()
    results: dict[str, object] = {}
    for n in args.ngram or [4, 6]:
        stacks = captioner_stacks(base.tokenizer, texts, block_list=block_list, ngram=n)
        reports = filter_utility_reports(
            party.model, base.tokenizer, base.image_processor, test_set, stacks
        )
        results[f"ngram={n}"] = {name: r.as_dict() for name, r in reports.items()}
        print(f"n-gram filter n={n} ({len(test_set)} test scenes, {recipe.rounds} rounds)")
        print(
            f"{'stack':<14}{'recall':>8}{'changed':>9}{'ms/tok':>9}{'+ms/tok':>9}"
            f"{'filter ms/tok':>15}"
        )
        for name, r in reports.items():
            print(
                f"{name:<14}{r.mean_recall:>8.3f}{r.captions_changed:>9.2f}"
                f"{r.ms_per_token:>9.3f}{r.added_ms_per_token:>+9.3f}"
                f"{r.filter_ms_per_token:>15.3f}"
            )
        example = reports["ngram-bloom"].captions[0]
        print(f"  e.g. none: {reports['none'].captions[0]!r}\n  ngram-bloom: {example!r}")
    payload = {
        "recipe": {
            "rounds": recipe.rounds,
            "samples_per_party": recipe.data.samples_per_party,
            "test_samples": recipe.data.test_samples,
        },
        "block_list": {"literals": list(block_list.literals), "patterns": len(block_list.patterns)},
        "private_texts": len(texts),
        "train_seconds": round(train_seconds, 1),
        "results": results,
    }
    if args.json is not None:
        args.json.write_text(json.dumps(payload, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
