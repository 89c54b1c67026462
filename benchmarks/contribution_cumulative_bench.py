"""Cumulative contribution scores (one d-dimensional DP release per organisation at the
end of the run, coalition models evaluated) vs exact Shapley values, over the same
configurations as contribution_bench.py.

Per configuration (the truth as in contribution_bench: the 15 coalitions retrained in
the clear, with the same offices):
private   one federation of office clients, SecAgg+ FedAvg rounds; then each
          organisation's clients release the mean of their centred whole-run updates
          (learner.contribution.cumulative_scores): without DP ("inf"), and --draws real
          client-DP releases at each --epsilon (real SecAgg+, ledgers charged);
projected the same, but each release is the clipped mean plus the noise an organisation
          of N offices would get at the first --epsilon (--noise-of N ...; a plaintext
          projection, NOT DP: benchmarks/projected_noise.py), --draws each.
One training run carries every scoring. Reported: the truth, every scoring's scores and
Spearman's rho against it, mean and minimum per row kind, the clip's headroom (each
client's centred norm), and seconds.

Usage:
  python benchmarks/contribution_cumulative_bench.py [--configs 3] [--epsilon 8]
      [--noise-of 30 100 300] [--draws 3] [--clip 10] [--json OUT]
  python benchmarks/contribution_cumulative_bench.py --quick
Default OUT: benchmarks/results/contribution_cumulative.json (appended to its "runs").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from contribution_bench import CONFIGURATIONS, described, rounded, setting, write_record
from projected_noise import ProjectedNoise, calibrated_mean_noise_std

from fedveil.errors import ConfigError
from fedveil.learner.contribution import Scoring, spearman, validation_utility
from fedveil.learner.contribution.cumulative_scores import cumulative_contributions
from fedveil.learner.contribution.scenario import ValueScenario, office_parties
from fedveil.learner.contribution.secure_run import ScoringPlan, make_scoring
from fedveil.runners.aggregators import InProcessSecAgg

DEFAULT_OUT = Path("benchmarks/results/contribution_cumulative.json")


@dataclasses.dataclass(frozen=True)
class Row:
    """One scoring to run: its label, kind ("inf", "dp", "projected"), epsilon, and the
    offices per organisation whose noise a projection adds."""

    label: str
    kind: str
    epsilon: float | None = None
    noise_of: int | None = None


def rows_of(args: argparse.Namespace) -> list[Row]:
    rows = [Row("inf", "inf")]
    rows += [
        Row(f"eps{eps:g}-draw{k}", "dp", eps) for eps in args.epsilon for k in range(args.draws)
    ]
    rows += [
        Row(f"eps{args.epsilon[0]:g}-noise-of-{n}-draw{k}", "projected", args.epsilon[0], n)
        for n in args.noise_of
        for k in range(args.draws)
    ]
    return rows


def scoring_of(row: Row, ids: list[str], size: int, args: argparse.Namespace) -> Scoring:
    if row.kind == "projected":
        assert row.epsilon is not None and row.noise_of is not None
        std = calibrated_mean_noise_std(row.noise_of, 1, row.epsilon, args.delta, args.clip)
        return Scoring(row.label, lambda _ids, _planned: ProjectedNoise(args.clip, std), None)
    plan = ScoringPlan(row.label, row.epsilon)
    return make_scoring(plan, ids, args.delta, args.clip, dimension=size)


def configuration(args: argparse.Namespace, seed: int, scenario: ValueScenario) -> dict[str, Any]:
    """Truth and every scoring of one configuration."""
    st = setting(args, seed, scenario)
    loaded, recipe, scenes, pixels, orgs, truth = (
        st.loaded,
        st.recipe,
        st.scenes,
        st.pixels,
        st.orgs,
        st.truth,
    )
    grouped = office_parties(loaded, orgs, args.offices, recipe)
    ids = [cid for clients in grouped.values() for cid in clients]
    first = next(iter(grouped[next(iter(grouped))].values()))
    size = first.layout.size
    rows = rows_of(args)
    run = cumulative_contributions(
        grouped,
        args.rounds,
        validation_utility(first, scenes, pixels),
        InProcessSecAgg(ids, size, rounds=args.rounds),
        [scoring_of(row, ids, size, args) for row in rows],
    )
    scorings = []
    for row, result in zip(rows, run.results, strict=True):
        out: dict[str, Any] = {
            "label": row.label,
            "kind": row.kind,
            "epsilon_target": "inf" if row.epsilon is None else row.epsilon,
            "noise_of_offices": row.noise_of,
            "scores": rounded(result.shapley),
            "spearman": round(spearman(rounded(result.shapley), rounded(truth.shapley)), 4),
            "epsilon_spent_max": max(result.epsilon.values()) if result.epsilon else None,
        }
        if row.kind == "inf":
            out["values"] = {k: round(v, 5) for k, v in result.values.items()}
        scorings.append(out)
        print(json.dumps({k: out[k] for k in ("label", "scores", "spearman")}), flush=True)
    summary: dict[str, Any] = {}
    for key in dict.fromkeys(
        (s["kind"], s["epsilon_target"], s["noise_of_offices"]) for s in scorings
    ):
        rhos = [
            s["spearman"]
            for s in scorings
            if (s["kind"], s["epsilon_target"], s["noise_of_offices"]) == key
        ]
        name = (
            key[0]
            if key[0] == "inf"
            else f"{key[0]}-eps{key[1]:g}" + (f"-noise-of-{key[2]}" if key[2] is not None else "")
        )
        summary[name] = {"mean": round(statistics.fmean(rhos), 4), "min": min(rhos)}
    return {
        **described(seed, scenario, truth),
        "private": {
            "scorings": scorings,
            "spearman": summary,
            "start_utility": round(run.start_utility, 4),
            "train_seconds": round(run.train_seconds, 1),
            "release_seconds_per_scoring": round(run.release_seconds / len(rows), 3),
            "evaluation_seconds_per_scoring": round(run.evaluation_seconds / len(rows), 3),
            "releases_per_client": 1,
            "dimension": size,
            "clip": args.clip,
            "noise_std_per_element": {
                str(n): round(
                    calibrated_mean_noise_std(n, 1, args.epsilon[0], args.delta, args.clip), 6
                )
                for n in [args.offices, *args.noise_of]
            },
        },
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    chosen = CONFIGURATIONS[: args.configs]
    if args.seeds:
        chosen = tuple(c for c in CONFIGURATIONS if c[0] in args.seeds)
    rows = [configuration(args, seed, roles) for seed, roles in chosen]
    overall = {}
    for name in rows[0]["private"]["spearman"]:
        means = [row["private"]["spearman"][name]["mean"] for row in rows]
        mins = [row["private"]["spearman"][name]["min"] for row in rows]
        overall[name] = {
            "mean_over_configurations": round(statistics.fmean(means), 4),
            "per_configuration_mean": means,
            "min": min(mins),
        }
    print("spearman", json.dumps(overall), flush=True)
    return {"configurations": rows, "spearman": overall}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--offices", type=int, default=3, help="office clients per organisation")
    p.add_argument("--configs", type=int, default=3, help=f"1-{len(CONFIGURATIONS)}")
    p.add_argument(
        "--seeds", type=int, nargs="*", default=[], help="run these configurations instead"
    )
    p.add_argument("--epsilon", type=float, nargs="+", default=[8.0])
    p.add_argument(
        "--noise-of",
        type=int,
        nargs="*",
        default=[30, 100, 300],
        help="project the noise of an organisation of N offices (plaintext, not DP)",
    )
    p.add_argument("--draws", type=int, default=3, help="scorings per epsilon / projection")
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--clip", type=float, default=10.0, help="clip of a client's centred sum")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", type=Path, default=DEFAULT_OUT)
    args = p.parse_args()
    if args.quick:
        args.rounds, args.configs, args.draws, args.noise_of = 2, 1, 1, [100]
    if not 1 <= args.configs <= len(CONFIGURATIONS):
        p.error(f"--configs must be in 1..{len(CONFIGURATIONS)}")
    if args.draws < 1 or args.rounds < 1 or args.offices < 2:
        p.error("--draws and --rounds must be >= 1, --offices >= 2")
    if not args.epsilon or any(not (e > 0 and math.isfinite(e)) for e in args.epsilon):
        p.error("--epsilon values must be positive numbers")
    known = [seed for seed, _ in CONFIGURATIONS]
    if any(seed not in known for seed in args.seeds):
        p.error(f"--seeds must be among {known}")
    if any(n < 2 for n in args.noise_of):
        p.error("--noise-of values must be >= 2")
    if not (args.clip > 0 and math.isfinite(args.clip)):
        p.error("--clip must be a positive number")
    return args


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    try:
        result = run(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    write_record(
        args, "cumulative scores: one d-dimensional DP release per organisation", started, result
    )


if __name__ == "__main__":
    main()
