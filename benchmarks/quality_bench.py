"""Model-based data cleaning at each party: one party with corrupted captions.

One party (default energy) has a share of its captions corrupted
(learner.quality.corruption: swapped between its scenes, or in another domain's words).
Four federations on the same data seed, recipe and rounds, in process (plaintext FedAvg,
which computes what SecAgg+ computes), scored on the same held-out scenes:

  clean       no corruption at all: the reference the others are compared with
  corrupted   the corrupted party trains on everything (no cleaning)
  cleaned     the corrupted party scores its examples with the round's global adapter
              from --start-round on and trains on what the policy keeps
              (learner.quality.federation.CleaningParty); the others train as usual
  oracle      the corrupted party trains on exactly its clean examples, every round, as
              a cleaning party that chose perfectly: same weight (its full count) and
              optimiser steps as `cleaned`

and, for `cleaned`, per round: how many corrupted and clean examples it dropped, the
cleaning's precision and recall against the corrupted indices, and the scores' AUC
(P(corrupted scores above clean)).

Usage:
  python benchmarks/quality_bench.py [--kind wrong-domain|swap] [--fraction 0.3]
      [--party energy] [--rounds 20] [--start-round 4] [--scorer prompt-contrast|loss|disagreement]
      [--method threshold|mad|top-fraction] [--threshold 0] [--drop-fraction 0.3]
      [--mad-c 3] [--json OUT]
  python benchmarks/quality_bench.py --quick     # smoke test: tiny data, 3 rounds
Default OUT: benchmarks/results/quality.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedveil.errors import ConfigError
from fedveil.learner.data.concepts import DOMAIN_PROMPTS, Domain
from fedveil.learner.data.datasets import (
    PartyDataset,
    SceneExample,
    make_party_datasets,
    make_test_set,
)
from fedveil.learner.federated_local import CaptionerRecipe, make_parties, run_federated
from fedveil.learner.models.base import build_base_model
from fedveil.learner.models.loading import LoadedModel, load_model
from fedveil.learner.quality import (
    CleaningMethod,
    CleaningParty,
    CleaningPolicy,
    CorruptedDataset,
    CorruptionKind,
    Scorer,
    corrupt_dataset,
    separation_auc,
)
from fedveil.learner.training.batches import encode_images
from fedveil.learner.training.party import Party

DEFAULT_OUT = Path("benchmarks/results/quality.json")


class OracleParty(CleaningParty):
    """The cleaning party with the oracle's choice: exactly the clean examples, every
    round; same weight (the full count) and optimiser steps as the cleaning party, so
    only the selection differs."""

    def __init__(self, party: Party, clean: np.ndarray) -> None:
        super().__init__(party, CleaningPolicy(), start_round=0, scorer=Scorer.LOSS)
        self.clean = clean

    def choose(self, round_index: int) -> np.ndarray | None:
        return self.clean


def scored(party: Party, scenes: tuple[SceneExample, ...], pixels: Any) -> dict[str, Any]:
    report = party.evaluate(scenes, pixels)
    return {**report.as_dict(), "mean_recall": round(report.mean_recall, 4)}


def federate(
    loaded: LoadedModel,
    datasets: dict[str, PartyDataset],
    recipe: CaptionerRecipe,
    scenes: tuple[SceneExample, ...],
    pixels: Any,
    cleaner: tuple[str, CleaningPolicy, int, Scorer] | None = None,
    oracle_of: tuple[str, np.ndarray] | None = None,
) -> tuple[dict[str, Any], Party]:
    """One federation; with `cleaner` = (party, policy, start_round, scorer) that party
    cleans its data every round."""
    started = time.perf_counter()
    parties = make_parties(loaded, datasets, recipe)
    if cleaner is not None:
        name, policy, start, scorer = cleaner
        others = [p.name for p in parties if p.name != name]
        prompts = [DOMAIN_PROMPTS[Domain(other)] for other in others]
        parties = [
            CleaningParty(p, policy, start, scorer, prompts) if p.name == name else p
            for p in parties
        ]
    if oracle_of is not None:
        name, clean = oracle_of
        parties = [OracleParty(p, clean) if p.name == name else p for p in parties]
    run_federated(parties, recipe.rounds, progress=False)
    row = scored(parties[0], scenes, pixels)
    row["caption_loss_by_domain"] = {
        k: round(v, 4) for k, v in parties[0].caption_losses(scenes, pixels).items()
    }
    row["seconds"] = round(time.perf_counter() - started, 1)
    chosen = parties[0] if cleaner is None else next(p for p in parties if p.name == cleaner[0])
    return row, chosen


def cleaning_stats(party: CleaningParty, corruption: CorruptedDataset) -> list[dict[str, Any]]:
    """Per cleaned round: dropped corrupted / clean, precision, recall, score AUC."""
    bad = corruption.mask()
    rows = []
    for record in party.history:
        dropped = ~record.keep
        hit = int((dropped & bad).sum())
        rows.append(
            {
                "round": record.round_index,
                "dropped_corrupted": hit,
                "dropped_clean": int((dropped & ~bad).sum()),
                "precision": round(hit / max(1, int(dropped.sum())), 4),
                "recall": round(hit / max(1, int(bad.sum())), 4),
                "auc": round(separation_auc(record.scores, bad), 4),
            }
        )
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    default = CaptionerRecipe()
    data = default.data
    if args.quick:
        data = dataclasses.replace(data, samples_per_party=24, test_samples=12)
    recipe = CaptionerRecipe(
        rounds=args.rounds, train=dataclasses.replace(default.train, progress=False), data=data
    )
    policy = CleaningPolicy(
        method=CleaningMethod(args.method),
        fraction=args.drop_fraction,
        mad_c=args.mad_c,
        threshold=args.threshold,
        max_drop=args.max_drop,
    )
    loaded = load_model(build_base_model(progress=False))
    scenes = make_test_set(recipe.data)
    pixels = encode_images(loaded.image_processor, [s.image for s in scenes])
    clean = make_party_datasets(recipe.data)
    if args.party not in clean:
        raise ConfigError(f"--party must be one of {sorted(clean)}, got {args.party!r}")
    corruption = corrupt_dataset(clean[args.party], args.fraction, args.kind, args.seed)
    corrupted = {**clean, args.party: corruption.dataset}
    out: dict[str, Any] = {}
    out["clean"], _ = federate(loaded, clean, recipe, scenes, pixels)
    print("clean", out["clean"]["mean_recall"], flush=True)
    out["corrupted"], _ = federate(loaded, corrupted, recipe, scenes, pixels)
    print("corrupted", out["corrupted"]["mean_recall"], flush=True)
    cleaner = (args.party, policy, args.start_round, Scorer(args.scorer))
    out["cleaned"], party = federate(loaded, corrupted, recipe, scenes, pixels, cleaner)
    assert isinstance(party, CleaningParty)
    out["cleaned"]["cleaning"] = cleaning_stats(party, corruption)
    print("cleaned", out["cleaned"]["mean_recall"], flush=True)
    choice = (args.party, ~corruption.mask())
    out["oracle"], _ = federate(loaded, corrupted, recipe, scenes, pixels, oracle_of=choice)
    print("oracle", out["oracle"]["mean_recall"], flush=True)
    last = out["cleaned"]["cleaning"][-1] if out["cleaned"]["cleaning"] else {}
    out["summary"] = {
        "recall_clean": out["clean"]["mean_recall"],
        "recall_corrupted": out["corrupted"]["mean_recall"],
        "recall_cleaned": out["cleaned"]["mean_recall"],
        "recall_oracle": out["oracle"]["mean_recall"],
        "corrupted_party_domain_recall": {
            k: out[k]["recall_by_domain"][args.party]
            for k in ("clean", "corrupted", "cleaned", "oracle")
        },
        "last_round_cleaning": last,
        "mean_auc": round(float(np.mean([r["auc"] for r in out["cleaned"]["cleaning"]])), 4)
        if out["cleaned"]["cleaning"]
        else None,
    }
    return out


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kind", choices=[k.value for k in CorruptionKind], default="wrong-domain")
    p.add_argument("--fraction", type=float, default=0.3, help="share of captions corrupted")
    p.add_argument("--party", default="energy")
    p.add_argument("--seed", type=int, default=0, help="corruption seed")
    p.add_argument("--rounds", type=int, default=CaptionerRecipe.rounds)
    p.add_argument("--start-round", type=int, default=4)
    p.add_argument("--scorer", choices=[s.value for s in Scorer], default="prompt-contrast")
    p.add_argument("--method", choices=[m.value for m in CleaningMethod], default="threshold")
    p.add_argument("--threshold", type=float, default=0.0)
    p.add_argument("--drop-fraction", type=float, default=0.3)
    p.add_argument("--mad-c", type=float, default=3.0)
    p.add_argument("--max-drop", type=float, default=0.5)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", type=Path, default=DEFAULT_OUT)
    args = p.parse_args()
    if args.quick:
        args.rounds, args.start_round = 3, 1
    return args


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    try:
        result = run(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    record = {
        "date": datetime.date.today().isoformat(),
        "profile": "quick" if args.quick else "full",
        "config": {
            k: getattr(args, k)
            for k in (
                "kind",
                "fraction",
                "party",
                "seed",
                "rounds",
                "start_round",
                "scorer",
                "method",
                "drop_fraction",
                "mad_c",
                "threshold",
                "max_drop",
            )
        },
        "seconds": round(time.perf_counter() - started, 1),
        **result,
    }
    previous = json.loads(args.json.read_text()) if args.json.exists() else {"runs": []}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"runs": [*previous.get("runs", []), record]}, indent=2))
    print(json.dumps(result["summary"]))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
