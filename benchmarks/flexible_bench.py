"""Heterogeneous LoRA ranks and a text-only party, under secure aggregation (issue 20).

Why this shape: the issue's claims are comparative, so every figure has its same-run
baseline. All federations run real in-process SecAgg+ rounds (runners.aggregators.
InProcessSecAgg) over the extended vectors of learner.lora.hetero_layout (padded delta,
indicator, reference entry); the recipe is the demo's (DemoOptions(...).recipe(): FFA,
one local epoch a round, Adam 1e-2, alpha / rank = 2 at every rank); scores are the
demo's (mean concept recall on the 90 full-caption test scenes).

  ranks      (a) parties at ranks 4, 8, 16 (energy, residential, urban) against every
             party at 16, and against each party alone (at 16, and at its own rank)
  text_only  (b) energy and residential with images; adding urban as a text-only party
             (its captions on a blank image, decoder-side adapters only) against the
             two-party federation without it, and the urban party alone, text only
  padding    (a) and (b) again with the plain mean of zero-padded deltas (indicators
             ignored): what the per-group decode changes
  hold_global (a) again, every party holding the rank-16 global adapter and training
             only its first r columns (HeteroConfig.hold_global)
  hold_global_padded  the same with the zero-padded plain mean

Usage:
  python benchmarks/flexible_bench.py [--rounds 20] [--json OUT] [--only SECTION] [--merge]
  python benchmarks/flexible_bench.py --quick       # smoke test: 2 rounds, few scenes

Default OUT: benchmarks/results/flexible.json (written after every section; --merge keeps
OUT's other sections when they were measured with the same rounds).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import time
from pathlib import Path
from typing import Any

from fedveil.demo.options import DemoOptions
from fedveil.learner.data.datasets import (
    PartyDataset,
    SceneExample,
    make_party_datasets,
    make_test_set,
)
from fedveil.learner.evaluation.report import (
    EvaluationReport,
    caption_loss_by_domain,
    evaluate_captioner,
)
from fedveil.learner.federated_local import CaptionerRecipe
from fedveil.learner.lora.aggregation import weighted_mean
from fedveil.learner.lora.config import LoraSettings
from fedveil.learner.lora.hetero_cohort import make_hetero_cohort, run_hetero_federated
from fedveil.learner.lora.hetero_config import HeteroConfig
from fedveil.learner.models.base import build_base_model
from fedveil.learner.models.loading import LoadedModel, load_model
from fedveil.learner.training.batches import encode_images
from fedveil.learner.training.party import Party
from fedveil.runners.aggregators import InProcessSecAgg

OUT = Path("benchmarks/results/flexible.json")


def _row(
    report: EvaluationReport, losses: dict[str, float], seconds: float, **extra: Any
) -> dict[str, Any]:
    """Recall (the demo's metric), precision, and the reference-caption loss per domain
    (smooth: it shows learning that has not yet changed a greedy caption)."""
    return {
        "mean_recall": round(report.mean_recall, 4),
        "recall_by_domain": {k: round(v, 4) for k, v in report.recall_by_domain.items()},
        "precision_by_domain": {k: round(v, 4) for k, v in report.precision_by_domain.items()},
        "caption_loss_by_domain": {k: round(v, 4) for k, v in losses.items()},
        "bleu": round(report.bleu, 2),
        "seconds": round(seconds, 1),
        **extra,
    }


class Bench:
    """The shared base model, test set and data; one method per measured setting."""

    def __init__(self, rounds: int, quick: bool) -> None:
        self.rounds = rounds
        self.loaded: LoadedModel = load_model(build_base_model(progress=False))
        data = DemoOptions(rounds=rounds, progress=False).recipe().data
        if quick:
            data = dataclasses.replace(data, samples_per_party=32, test_samples=12)
        self.data = data
        self.datasets = make_party_datasets(data)
        self.test_set: tuple[SceneExample, ...] = make_test_set(data)
        self.pixels = encode_images(self.loaded.image_processor, [s.image for s in self.test_set])

    def recipe(
        self, parties: int, ranks: tuple[int, ...] | None, text_only: tuple[str, ...]
    ) -> CaptionerRecipe:
        options = DemoOptions(
            rounds=self.rounds,
            parties=parties,
            ranks=ranks,
            text_only_party=text_only,
            progress=False,
        )
        recipe = options.recipe()
        if recipe.hetero is not None:  # the design; sections change it explicitly
            hetero = dataclasses.replace(recipe.hetero, weighting="group", hold_global=False)
            recipe = dataclasses.replace(recipe, hetero=hetero)
        return dataclasses.replace(recipe, data=self.data)

    def base(self) -> dict[str, Any]:
        started = time.perf_counter()
        report = evaluate_captioner(
            self.loaded.model,
            self.loaded.tokenizer,
            self.loaded.image_processor,
            self.test_set,
            pixel_values=self.pixels,
        )
        losses = caption_loss_by_domain(
            self.loaded.model,
            self.loaded.tokenizer,
            self.loaded.image_processor,
            self.test_set,
            pixel_values=self.pixels,
        )
        return _row(report, losses, time.perf_counter() - started)

    def score(self, party: Party) -> tuple[EvaluationReport, dict[str, float]]:
        """The global adapter a party holds: recall report and caption losses."""
        return party.evaluate(self.test_set, self.pixels), party.caption_losses(
            self.test_set, self.pixels
        )

    def federation(
        self, datasets: dict[str, PartyDataset], recipe: CaptionerRecipe, per_group: bool = True
    ) -> dict[str, Any]:
        """Real in-process SecAgg+ rounds over the extended vectors (per_group False: the
        zero-padded plain mean, the indicators ignored)."""
        hetero = recipe.hetero
        assert hetero is not None
        started = time.perf_counter()
        cohort = make_hetero_cohort(self.loaded, datasets, recipe, hetero)
        cohort.weighting = "group" if per_group else "plain"
        secure = InProcessSecAgg(list(datasets), cohort.layout.size, rounds=recipe.rounds)
        run_hetero_federated(cohort, recipe.rounds, secure, progress=False)
        report, losses = self.score(cohort.reference)
        return _row(
            report,
            losses,
            time.perf_counter() - started,
            ranks={n: hetero.rank_of(n) for n in datasets},
            text_only=sorted(hetero.text_only),
            lone_bands=len(hetero.lone_bands(list(datasets), ("text", "vision"))),
            dimension=cohort.layout.size,
            adapter_values=cohort.layout.full.size,
            max_error_bound=max(r.error_bound for r in secure.results),
            weighting="per-group (indicator decode)" if per_group else "zero-padded plain mean",
        )

    def alone(self, name: str, rank: int, max_rank: int, text_only: bool) -> dict[str, Any]:
        """One party, its own rank and sides, plaintext (a cohort of one)."""
        hetero = HeteroConfig(max_rank, {name: rank}, frozenset({name} if text_only else ()))
        recipe = dataclasses.replace(
            self.recipe(3, None, ()), hetero=hetero, lora=_lora_at(max_rank)
        )
        started = time.perf_counter()
        cohort = make_hetero_cohort(
            self.loaded, {name: self.datasets[name]}, recipe, hetero, alone=True
        )
        run_hetero_federated(cohort, recipe.rounds, weighted_mean, progress=False)
        report, losses = self.score(cohort.reference)
        return _row(report, losses, time.perf_counter() - started, rank=rank, text_only=text_only)


def _lora_at(rank: int) -> LoraSettings:
    """The demo's adapter at `rank` (alpha / rank as the default's)."""
    return DemoOptions(ranks=(rank, rank, rank), progress=False).recipe().lora


def ranks_section(bench: Bench) -> dict[str, Any]:
    mixed = (4, 8, 16)
    names = list(bench.datasets)
    hetero = bench.federation(bench.datasets, bench.recipe(3, mixed, ()))
    uniform = bench.federation(bench.datasets, bench.recipe(3, (16, 16, 16), ()))
    alone16 = {n: bench.alone(n, 16, 16, False) for n in names}
    alone_own = {n: bench.alone(n, r, 16, False) for n, r in zip(names, mixed, strict=True)}
    best16 = max(row["mean_recall"] for row in alone16.values())
    return {
        "ranks_4_8_16": hetero,
        "all_16": uniform,
        "alone_at_16": alone16,
        "alone_at_own_rank": alone_own,
        "best_alone_at_16": best16,
        "hetero_minus_all_16": round(hetero["mean_recall"] - uniform["mean_recall"], 4),
        "hetero_minus_best_alone": round(hetero["mean_recall"] - best16, 4),
    }


def text_only_section(bench: Bench) -> dict[str, Any]:
    image = {n: bench.datasets[n] for n in ("energy", "residential")}
    without = bench.federation(image, bench.recipe(2, (8, 8), ()))
    with_text = bench.federation(bench.datasets, bench.recipe(3, None, ("urban",)))
    urban_alone = bench.alone("urban", 8, 8, True)
    before, after = without["recall_by_domain"], with_text["recall_by_domain"]
    return {
        "without_text_party": without,
        "with_text_only_urban": with_text,
        "urban_alone_text_only": urban_alone,
        "image_parties_recall_change": {d: round(after[d] - before[d], 4) for d in image},
        "urban_recall_change": round(after["urban"] - before["urban"], 4),
        "caption_loss_change": {
            d: round(
                with_text["caption_loss_by_domain"][d] - without["caption_loss_by_domain"][d], 4
            )
            for d in with_text["caption_loss_by_domain"]
        },
    }


def padding_section(bench: Bench) -> dict[str, Any]:
    """The same ranks 4, 8, 16 with the plain mean of zero-padded deltas: a party's zeros
    dilute the columns it does not train (the higher-rank parties' own columns weigh
    1/3, as in the uniform federation, instead of 1)."""
    mixed = (4, 8, 16)
    zero_padded = bench.federation(bench.datasets, bench.recipe(3, mixed, ()), per_group=False)
    with_text = bench.federation(bench.datasets, bench.recipe(3, None, ("urban",)), per_group=False)
    return {"ranks_4_8_16_zero_padded": zero_padded, "text_only_urban_zero_padded": with_text}


def hold_global_section(bench: Bench) -> dict[str, Any]:
    """Ranks 4, 8, 16 again, every party holding the whole rank-16 global adapter and
    training only its first r columns (HeteroConfig.hold_global): same uploads, the
    lower-rank parties now see (and train against) the columns they do not train."""
    recipe = bench.recipe(3, (4, 8, 16), ())
    assert recipe.hetero is not None
    held = dataclasses.replace(recipe.hetero, hold_global=True)
    return {
        "ranks_4_8_16_hold_global": bench.federation(
            bench.datasets, dataclasses.replace(recipe, hetero=held)
        )
    }


def hold_global_padded_section(bench: Bench) -> dict[str, Any]:
    """hold_global with the zero-padded plain mean: the columns only the rank-16 party
    trains then move by a third of its delta, as in the uniform federation."""
    recipe = bench.recipe(3, (4, 8, 16), ())
    assert recipe.hetero is not None
    held = dataclasses.replace(recipe.hetero, hold_global=True)
    return {
        "ranks_4_8_16_hold_global_zero_padded": bench.federation(
            bench.datasets, dataclasses.replace(recipe, hetero=held), per_group=False
        )
    }


SECTIONS = {
    "ranks": ranks_section,
    "text_only": text_only_section,
    "padding": padding_section,
    "hold_global": hold_global_section,
    "hold_global_padded": hold_global_padded_section,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--json", type=Path, default=OUT)
    parser.add_argument("--only", choices=sorted(SECTIONS), default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--merge", action="store_true", help="keep the sections of OUT this run does not measure"
    )
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    bench = Bench(rounds, args.quick)
    out: dict[str, Any] = {
        "benchmark": "flexible",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "rounds": rounds,
        "quick": args.quick,
        "test_scenes": len(bench.test_set),
        "samples_per_party": bench.data.samples_per_party,
        "aggregation": "in-process SecAgg+ (runners.aggregators.InProcessSecAgg), 48 bits",
        "base": bench.base(),
    }
    if args.merge and args.json.is_file():
        kept = json.loads(args.json.read_text())
        if kept.get("rounds") != rounds or kept.get("quick") != args.quick:
            raise SystemExit(f"{args.json} was measured with other rounds; not merging")
        for name in SECTIONS:
            if name in kept and args.only not in (None, name):
                out[name] = kept[name]
    for name, section in SECTIONS.items():
        if args.only not in (None, name):
            continue
        started = time.perf_counter()
        out[name] = section(bench)
        out[name]["section_seconds"] = round(time.perf_counter() - started, 1)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
        print(json.dumps({name: out[name]}, indent=2), flush=True)


if __name__ == "__main__":
    main()
