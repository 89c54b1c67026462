"""Buffered (FedBuff) against synchronous rounds with one slow party (issue 20, part 3).

Why this shape: the claim is that a slow party no longer stalls the others, so the
figure is simulated time to a target mean concept recall, each buffered run next to its
same-run synchronous baseline. All runs are learner.federation.buffered_local on one
simulated clock: every local run of a fast party takes 1 unit (unit_seconds: the
measured wall time of one local run of the demo's recipe on this machine), the slow
party's (urban) `slowdown` units. Synchronous: every round waits for all three
organisations (buffer_size 3); buffered: buffer_size K (default 2), once with FedBuff's
staleness weight 1/sqrt(1 + tau) and once without (constant). Every buffer and every
round is a real in-process SecAgg+ round among its members (runners.aggregators.
InProcessSecAgg). The recipe is the demo's (FFA-LoRA, one local epoch a round, Adam
1e-2); the score is the demo's (mean concept recall on the 90 full-caption test scenes),
taken at the first buffer at or after every `eval_every` units, and timed for two
targets: 1/3 (the most any single organisation reaches: it knows one of three domains)
and 0.5 (which needs every domain, the slow party's too).

K = 2 of three organisations: in process the clients' floor is 2 (runners.simulation);
the service's default client floor is 3, so a deployment with three organisations and
the default floor cannot buffer (round.buffer_size >= min_cohort); README "Buffered
rounds" says what a K-client buffer reveals.

Usage:
  python benchmarks/buffered_bench.py [--buffer 2] [--slowdown 5] [--targets 0.333,0.5]
      [--horizon 100] [--eval-every 2.5] [--staleness polynomial,constant] [--json OUT]
  python benchmarks/buffered_bench.py --quick     # smoke test: small data, short horizon

Default OUT: benchmarks/results/buffered.json (about 12 minutes on two busy cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedveil.learner.data.datasets import SceneExample, make_party_datasets, make_test_set
from fedveil.learner.federated_local import CaptionerRecipe, make_parties
from fedveil.learner.federation.buffered_local import (
    BufferedConfig,
    BufferRecord,
    run_buffered,
)
from fedveil.learner.federation.staleness import StalenessKind, StalenessWeight
from fedveil.learner.models.base import build_base_model
from fedveil.learner.models.loading import LoadedModel, load_model
from fedveil.learner.training.batches import encode_images
from fedveil.learner.training.party import Party
from fedveil.runners.aggregators import InProcessSecAgg

OUT = Path("benchmarks/results/buffered.json")
SLOW_PARTY = "urban"


class Bench:
    """The base model, data, test set and an evaluator party shared by both runs."""

    def __init__(self, quick: bool) -> None:
        self.loaded: LoadedModel = load_model(build_base_model(progress=False))
        recipe = CaptionerRecipe()
        data = recipe.data
        if quick:
            data = dataclasses.replace(data, samples_per_party=32, test_samples=12)
        self.recipe = dataclasses.replace(
            recipe, data=data, train=dataclasses.replace(recipe.train, progress=False)
        )
        self.datasets = make_party_datasets(data)
        self.test_set: tuple[SceneExample, ...] = make_test_set(data)
        self.pixels = encode_images(self.loaded.image_processor, [s.image for s in self.test_set])
        first = dict(list(self.datasets.items())[:1])
        self.judge = make_parties(self.loaded, first, self.recipe)[0]  # scores a vector

    def parties(self) -> list[Party]:
        return make_parties(self.loaded, self.datasets, self.recipe)

    def unit_seconds(self) -> float:
        """Wall seconds of one local run of one party (the median of the three)."""
        seconds = []
        for party in self.parties():
            started = time.perf_counter()
            party.train_round(0)
            seconds.append(time.perf_counter() - started)
        return float(np.median(seconds))

    def recall(self, vector: np.ndarray) -> dict[str, Any]:
        self.judge.global_vector = vector.copy()
        report = self.judge.evaluate(self.test_set, self.pixels)
        return {
            "mean_recall": round(report.mean_recall, 4),
            "recall_by_domain": {k: round(v, 4) for k, v in report.recall_by_domain.items()},
        }

    def run(
        self, buffer_size: int, durations: dict[str, float], staleness: StalenessWeight, args: Any
    ) -> dict[str, Any]:
        """One federation until the highest target recall or the horizon; recall vs
        simulated time, and the first simulated time each target was reached."""
        curve: list[dict[str, Any]] = []
        next_eval = [args.eval_every]
        reached: dict[float, float] = {}
        counts = {name: 0 for name in durations}
        taus: list[int] = []
        errors: list[float] = []

        def round_for(members: tuple[str, ...]) -> Any:
            secure = InProcessSecAgg(list(members), self.judge.layout.size, rounds=1)

            def aggregate(updates: Any) -> np.ndarray:
                mean = secure(updates)
                errors.append(float(secure.results[-1].error_bound))
                return mean

            return aggregate

        def on_buffer(record: BufferRecord, vector: np.ndarray) -> bool:
            for name in record.members:
                counts[name] += 1
            taus.extend(record.staleness.values())
            if record.time < next_eval[0] - 1e-9:
                return False
            while next_eval[0] <= record.time + 1e-9:
                next_eval[0] += args.eval_every
            row = {"time": record.time, "buffers": record.index + 1, **self.recall(vector)}
            curve.append(row)
            for target in args.targets:
                if row["mean_recall"] >= target:
                    reached.setdefault(target, record.time)
            return len(reached) == len(args.targets)  # nothing after the last is measured

        started = time.perf_counter()
        config = BufferedConfig(
            buffer_size, durations, buffers=10_000, staleness=staleness, until=args.horizon
        )
        parties = self.parties()
        run = run_buffered(parties, config, round_for, on_buffer)
        return {
            "buffer_size": buffer_size,
            "staleness": dataclasses.asdict(staleness),
            "time_to": {f"{t:.3f}": reached.get(t) for t in args.targets},
            "buffers_run": len(run.records),
            "contributions": counts,
            "max_staleness": max(taus) if taus else 0,
            "mean_staleness": round(float(np.mean(taus)), 3) if taus else 0.0,
            "max_error_bound": max(errors) if errors else 0.0,
            "curve": curve,
            "wall_seconds": round(time.perf_counter() - started, 1),
        }


def _targets(text: str) -> list[float]:
    return sorted(float(t) for t in text.split(","))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--buffer", type=int, default=2)
    parser.add_argument("--slowdown", type=float, default=5.0)
    parser.add_argument(
        "--targets",
        type=_targets,
        default=[1 / 3, 0.5],
        help="mean recalls to time (default: 1/3, the most any single party can reach "
        "(it knows one of three domains), and 0.5)",
    )
    parser.add_argument("--horizon", type=float, default=100.0, help="simulated units")
    parser.add_argument("--eval-every", type=float, default=2.5, help="simulated units")
    parser.add_argument(
        "--staleness",
        default="polynomial,constant",
        help="buffered runs, one per staleness function (comma-separated)",
    )
    parser.add_argument("--json", type=Path, default=OUT)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.horizon, args.eval_every = 6.0, 3.0
    bench = Bench(args.quick)
    unit = bench.unit_seconds()
    durations = {n: (args.slowdown if n == SLOW_PARTY else 1.0) for n in bench.datasets}
    base = bench.recall(bench.judge.global_vector)  # before any run moves the judge
    runs = {
        "synchronous": bench.run(
            len(durations), durations, StalenessWeight(StalenessKind.CONSTANT), args
        )
    }
    for kind in args.staleness.split(","):
        staleness = StalenessWeight(StalenessKind(kind))
        runs[f"buffered_{kind}"] = bench.run(args.buffer, durations, staleness, args)
    sync = runs["synchronous"]["time_to"]
    speedups = {
        name: {
            t: (round(sync[t] / row["time_to"][t], 2) if sync[t] and row["time_to"][t] else None)
            for t in sync
        }
        for name, row in runs.items()
        if name != "synchronous"
    }
    result = {
        "date": datetime.date.today().isoformat(),
        "quick": args.quick,
        "unit_seconds": round(unit, 3),
        "note": "times are simulated units: one local run of a fast party = 1 = unit_seconds "
        "wall seconds on the machine that ran this; the slow party takes `slowdown` units",
        "slow_party": SLOW_PARTY,
        "slowdown": args.slowdown,
        "buffer_size": args.buffer,
        "targets": args.targets,
        "horizon": args.horizon,
        "eval_every": args.eval_every,
        "base": base,
        "runs": runs,
        "speedup_vs_synchronous": speedups,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}))
    for name, row in runs.items():
        print(name, "time_to", row["time_to"], "buffers", row["buffers_run"], row["contributions"])
        for point in row["curve"]:
            time_, recall = point["time"], point["mean_recall"]
            print(f"  t={time_:5.1f}  recall {recall:.3f}  {point['recall_by_domain']}")


if __name__ == "__main__":
    main()
