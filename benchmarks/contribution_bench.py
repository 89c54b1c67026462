"""Projected contribution scores (one DP number per organisation and round) vs exact
Shapley values, over several configurations of parties of different value.

Each configuration: the city-safety data at a seed, and four organisations
(learner.contribution.scenario): one domain held twice (X and X-dup, identical data),
one halved (Y-half), one with 30% wrong-domain captions (Z-noisy); which domain plays
which part rotates between configurations.

truth    exact Shapley values in the clear: each of the 15 coalitions trains its own
         plaintext federation for --rounds rounds (organisations as whole parties,
         named by their data so the duplicate pair ties exactly); a coalition's value is
         minus the validation caption loss of its final adapter
         (learner.contribution.truth).
private  one federation of office clients (each organisation split into --offices
         clients), SecAgg+ FedAvg rounds; every round the validator broadcasts the
         validation gradient, every client projects its update on it, and each
         organisation's clients release the DP mean of their projections in a
         dimension-1 SecAgg+ round (learner.contribution.projected_scores/secure_run).
         One training run carries every scoring: without DP ("inf"), and --draws
         independent scorings (their own noise, releases and ledgers) at each --epsilon.
Reported per configuration: the truth, every scoring's scores and Spearman's rho against
the truth (average ranks for ties), the mean and minimum rho per epsilon, the largest
epsilon any client spent, rounds and releases, and seconds: the scoring's overhead on
the same federation, and the whole private run against the truth's plain federation of
the four organisations (same run, same machine).

Usage:
  python benchmarks/contribution_bench.py [--rounds 4] [--offices 3] [--configs 3]
      [--epsilon 8 4 1] [--draws 5] [--clip 0.5] [--delta 1e-5] [--json OUT]
  python benchmarks/contribution_bench.py --quick      # tiny data, 2 rounds, 1 config
Default OUT: benchmarks/results/contribution.json (appended to its "runs").
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from fedveil.errors import ConfigError
from fedveil.learner.contribution import spearman, validation_utility
from fedveil.learner.contribution.scenario import ValueScenario, organisations
from fedveil.learner.contribution.secure_run import ScoringPlan, secure_projected_run
from fedveil.learner.contribution.truth import CleartextShapley, cleartext_shapley
from fedveil.learner.data.concepts import Domain
from fedveil.learner.data.datasets import PartyDataset, SceneExample, make_validation_set
from fedveil.learner.federated_local import CaptionerRecipe
from fedveil.learner.models.base import build_base_model
from fedveil.learner.models.loading import LoadedModel, load_model
from fedveil.learner.training.batches import encode_images

DEFAULT_OUT = Path("benchmarks/results/contribution.json")
VALIDATION_SAMPLES = 45
E, R, U = Domain.ENERGY, Domain.RESIDENTIAL, Domain.URBAN
CONFIGURATIONS = (
    (0, ValueScenario(duplicate=E, halved=R, noisy=U)),
    (1, ValueScenario(duplicate=U, halved=E, noisy=R)),
    (2, ValueScenario(duplicate=R, halved=U, noisy=E)),
    (3, ValueScenario(duplicate=E, halved=U, noisy=R)),
    (4, ValueScenario(duplicate=U, halved=R, noisy=E)),
    (5, ValueScenario(duplicate=R, halved=E, noisy=U)),
)
"""(data seed, roles): every domain plays every part once in the first three."""


def rounded(scores: dict[str, float]) -> dict[str, float]:
    """To 9 decimals: equal values summed in another order tie (Spearman's average ranks)."""
    return {k: round(v, 9) for k, v in scores.items()}


@dataclasses.dataclass(frozen=True, eq=False)
class Setting:
    """One configuration's model, recipe, validation scenes, organisations and truth
    (shared with contribution_cumulative_bench.py)."""

    loaded: LoadedModel
    recipe: CaptionerRecipe
    scenes: list[SceneExample]
    pixels: torch.Tensor
    orgs: dict[str, PartyDataset]
    truth: CleartextShapley


def setting(args: argparse.Namespace, seed: int, scenario: ValueScenario) -> Setting:
    """Build one configuration and compute its truth (exact Shapley in the clear)."""
    default = CaptionerRecipe()
    data = dataclasses.replace(default.data, seed=seed)
    if args.quick:
        data = dataclasses.replace(data, samples_per_party=24, test_samples=4)
    recipe = CaptionerRecipe(
        rounds=args.rounds, train=dataclasses.replace(default.train, progress=False), data=data
    )
    loaded = load_model(build_base_model(progress=False))
    scenes = make_validation_set(data, 8 if args.quick else VALIDATION_SAMPLES)
    pixels = encode_images(loaded.image_processor, [s.image for s in scenes])
    orgs = organisations(data, scenario)
    truth = cleartext_shapley(
        loaded,
        orgs,
        recipe,
        lambda party: validation_utility(party, scenes, pixels),
        args.offices,
        log=lambda line: print(line, flush=True),
    )
    print(f"seed {seed} truth {json.dumps(rounded(truth.shapley))}", flush=True)
    return Setting(loaded, recipe, list(scenes), pixels, orgs, truth)


def described(seed: int, scenario: ValueScenario, truth: CleartextShapley) -> dict[str, Any]:
    """A configuration's record header: its seed, roles and truth."""
    return {
        "seed": seed,
        "roles": {
            "duplicate": scenario.duplicate.value,
            "halved": scenario.halved.value,
            "noisy": scenario.noisy.value,
        },
        "truth": {
            "shapley": rounded(truth.shapley),
            "values": {k: round(v, 5) for k, v in truth.values.items()},
            "seconds": round(truth.seconds, 1),
        },
        "plain_federation_seconds": round(truth.grand_seconds, 1),
    }


def write_record(
    args: argparse.Namespace, design: str, started: float, result: dict[str, Any]
) -> None:
    """Append this run's record to --json's "runs"."""
    record = {
        "date": datetime.date.today().isoformat(),
        "design": design,
        "profile": "quick" if args.quick else "full",
        "rounds": args.rounds,
        "offices_per_organisation": args.offices,
        "draws": args.draws,
        "delta": args.delta,
        "clip": args.clip,
        "utility": "minus the mean validation caption loss over the three domains",
        "seconds": round(time.perf_counter() - started, 1),
        **result,
    }
    previous = json.loads(args.json.read_text()) if args.json.exists() else {"runs": []}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"runs": [*previous.get("runs", []), record]}, indent=2))
    print(f"wrote {args.json}")


def configuration(args: argparse.Namespace, seed: int, scenario: ValueScenario) -> dict[str, Any]:
    """Truth and every scoring of one configuration."""
    st = setting(args, seed, scenario)
    loaded, recipe, scenes, orgs, truth = st.loaded, st.recipe, st.scenes, st.orgs, st.truth
    plans = [ScoringPlan("inf", None)] + [
        ScoringPlan(f"eps{eps:g}-draw{k}", eps) for eps in args.epsilon for k in range(args.draws)
    ]
    run = secure_projected_run(
        loaded, orgs, recipe, scenes, args.offices, plans, args.delta, args.clip
    )
    scorings = []
    for plan, result in zip(plans, run.results, strict=True):
        row: dict[str, Any] = {
            "label": plan.label,
            "epsilon_target": "inf" if plan.epsilon is None else plan.epsilon,
            "scores": rounded(result.shapley),
            "spearman": round(spearman(rounded(result.shapley), rounded(truth.shapley)), 4),
            "epsilon_spent_max": max(result.epsilon.values()) if result.epsilon else None,
        }
        if plan.epsilon is None:  # the exact released means show the clip's headroom
            row["released_means"] = [rounded(r.released) for r in result.rounds]
            row["gradient_norms"] = [round(r.gradient_norm, 4) for r in result.rounds]
        scorings.append(row)
        print(json.dumps({k: row[k] for k in ("label", "scores", "spearman")}), flush=True)
    summary = {}
    for eps in ["inf", *args.epsilon]:
        rhos = [s["spearman"] for s in scorings if s["epsilon_target"] == eps]
        summary[str(eps)] = {"mean": round(statistics.fmean(rhos), 4), "min": min(rhos)}
    return {
        **described(seed, scenario, truth),
        "private": {
            "scorings": scorings,
            "spearman": summary,
            "utility_per_round": [round(u, 4) for u in run.utilities],
            "releases_per_client": args.rounds,
            "releases_per_round": len(orgs),
            "train_seconds": round(run.train_seconds, 1),
            "gradient_seconds": round(run.gradient_seconds, 1),
            "release_seconds_all_scorings": round(run.release_seconds, 2),
            "release_seconds_per_scoring": round(run.release_seconds / len(plans), 3),
            "scoring_overhead_vs_same_federation": round(
                (run.gradient_seconds + run.release_seconds / len(plans)) / run.train_seconds, 3
            ),
            "seconds_vs_plain_federation": round(
                (run.seconds - run.release_seconds * (1 - 1 / len(plans))) / truth.grand_seconds,
                2,
            ),
        },
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = [configuration(args, seed, roles) for seed, roles in CONFIGURATIONS[: args.configs]]
    overall = {}
    for eps in ["inf", *args.epsilon]:
        means = [row["private"]["spearman"][str(eps)]["mean"] for row in rows]
        mins = [row["private"]["spearman"][str(eps)]["min"] for row in rows]
        overall[str(eps)] = {
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
    p.add_argument("--epsilon", type=float, nargs="+", default=[8.0, 4.0, 1.0])
    p.add_argument("--draws", type=int, default=5, help="independent DP scorings per epsilon")
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--clip", type=float, default=0.5, help="clip of a client's centred projection")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", type=Path, default=DEFAULT_OUT)
    args = p.parse_args()
    if args.quick:
        args.rounds, args.configs, args.epsilon, args.draws = 2, 1, [8.0], 2
    if not 1 <= args.configs <= len(CONFIGURATIONS):
        p.error(f"--configs must be in 1..{len(CONFIGURATIONS)}")
    if args.draws < 1 or args.rounds < 1 or args.offices < 2:
        p.error("--draws and --rounds must be >= 1, --offices >= 2")
    for eps in args.epsilon:
        if not (eps > 0 and math.isfinite(eps)):
            p.error(f"--epsilon values must be positive numbers, got {eps}")
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
        args, "projected scores: one DP scalar per organisation and round", started, result
    )


if __name__ == "__main__":
    main()
