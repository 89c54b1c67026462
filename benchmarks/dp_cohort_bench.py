"""Client-level DP against cohort size: how many clients before DP keeps its utility?

Why this shape: at a fixed (epsilon, delta) over the run, the noise multiplier z is fixed
and the noise std on each element of the federation's mean is about
z C sqrt(n / min_clients) / n; with min_clients = half the cohort (runners.aggregators.
honest_floor) that is sqrt(2) z C / n. So more clients buy a less noisy mean for the same
privacy. This splits each organisation of the city-safety task into N branch offices
(datasets.split_party_dataset: the organisation's 240 samples cut into N slices, so the
data and the organisations-alone baselines do not change with N, only how many DP
clients hold it), runs client-level distributed DP inside real in-process SecAgg+
rounds (runners.aggregators.InProcessSecAgg, the service's calibration and accountant)
and reports, for every cohort size n = 3 N:

  private      the DP federation: per-domain and mean concept recall, BLEU, the epsilon
               the accountant reports after the last round, z, min_clients, noise std per
               element of the mean, seconds
  nonprivate   the same cohort and recipe over SecAgg+ without DP (the same n)
  projected    with --project N': the same n offices trained, their updates clipped to
               C and averaged in plaintext, plus the noise the service's calibration
               gives a cohort of N' (ProjectedNoise): a projection of a cohort too large
               to run here, not a DP result
and once per run (they do not depend on n):
  base         the base model
  alone        each organisation trained alone, non-private, on its whole data
  best_alone   the best of them (mean recall): the bar the private federation must clear

The private federation's own recipe (--rank, --server-lr, --server-momentum: the
levers against the noise; learner.federation.server_step) is recorded with every run;
the organisations alone always train the default recipe (rank 8), the bar at its best.

Usage:
  python benchmarks/dp_cohort_bench.py [--clients 3 30 90] [--clip 1.0] [--epsilon 8]
      [--delta 1e-5] [--rounds 20] [--rank 8] [--server-lr 1] [--server-momentum 0]
      [--project 300 900] [--score test|validation] [--merge] [--json OUT]
  python benchmarks/dp_cohort_bench.py --quick      # smoke test, about a minute

--score validation scores on 45 scenes disjoint from the test set (datasets.
make_validation_set): use it to choose --clip and the recipe without looking at the test
set. --merge keeps the points of an existing OUT whose n, clip, score and recipe this run
does not measure.
Default OUT: benchmarks/results/dp_cohort.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import time
from pathlib import Path
from typing import Any

from projected_noise import ProjectedNoise, calibrated_mean_noise_std

from fedveil.learner.data.concepts import DOMAINS
from fedveil.learner.data.datasets import (
    SceneExample,
    make_client_datasets,
    make_party_datasets,
    make_test_set,
    make_validation_set,
)
from fedveil.learner.evaluation.report import EvaluationReport, evaluate_captioner
from fedveil.learner.federated_local import (
    CaptionerRecipe,
    make_client_parties,
    make_parties,
    run_federated,
)
from fedveil.learner.federation.server_step import ServerStep
from fedveil.learner.lora.aggregation import weighted_mean
from fedveil.learner.models.base import build_base_model
from fedveil.learner.models.loading import LoadedModel, load_model
from fedveil.learner.training.batches import encode_images
from fedveil.runners.aggregators import InProcessSecAgg

DEFAULT_OUT = Path("benchmarks/results/dp_cohort.json")
VALIDATION_SAMPLES = 45


@dataclasses.dataclass(frozen=True)
class Profile:
    """One benchmark run's knobs (the full one is the demo's recipe)."""

    clients: tuple[int, ...]
    rounds: int
    samples_per_party: int
    test_samples: int
    epsilon: float
    delta: float
    clip: float
    score: str
    rank: int = CaptionerRecipe().lora.rank
    server: ServerStep = ServerStep()
    project: tuple[int, ...] = ()
    """Cohort sizes whose noise level to project onto every measured n (ProjectedNoise)."""

    def recipe_key(self) -> dict[str, Any]:
        """What a run's points depend on besides n (the keys --merge matches)."""
        return {
            "clip": self.clip,
            "score": self.score,
            "rank": self.rank,
            "rounds": self.rounds,
            "server_lr": self.server.learning_rate,
            "server_momentum": self.server.momentum,
        }


def quick_profile(
    clip: float, score: str, rank: int, server: ServerStep, project: tuple[int, ...]
) -> Profile:
    """Tiny data, two rounds, n in {3, 6}: checks the pipeline, not the curve."""
    return Profile((3, 6), 2, 24, 12, 8.0, 1e-5, clip, score, rank, server, project)


def scored(report: EvaluationReport) -> dict[str, Any]:
    return {**report.as_dict(), "mean_recall": round(report.mean_recall, 4)}


def evaluate(party: Any, scenes: tuple[SceneExample, ...], pixels: Any) -> dict[str, Any]:
    return scored(party.evaluate(scenes, pixels))


def references(
    loaded: LoadedModel, recipe: CaptionerRecipe, scenes: tuple[SceneExample, ...], pixels: Any
) -> dict[str, Any]:
    """The base model and every organisation alone (non-private, whole data)."""
    base = evaluate_captioner(
        loaded.model, loaded.tokenizer, loaded.image_processor, scenes, pixel_values=pixels
    )
    alone = {}
    for name, data in make_party_datasets(recipe.data, DOMAINS).items():
        single = make_parties(loaded, {name: data}, recipe)
        run_federated(single, recipe.rounds, weighted_mean, progress=False)
        alone[name] = evaluate(single[0], scenes, pixels)
    best = max(alone, key=lambda name: alone[name]["mean_recall"])
    return {"base": scored(base), "alone": alone, "best_alone": {"party": best, **alone[best]}}


def federation(
    loaded: LoadedModel,
    recipe: CaptionerRecipe,
    clients_per_party: int,
    profile: Profile,
    scenes: tuple[SceneExample, ...],
    pixels: Any,
    *,
    private: bool,
    project: int | None = None,
) -> dict[str, Any]:
    """One cohort's federation over in-process SecAgg+, with or without client DP; with
    `project`, the plaintext projection of a cohort of that size (ProjectedNoise)."""
    started = time.perf_counter()
    datasets = make_client_datasets(recipe.data, DOMAINS, clients_per_party)
    parties = make_client_parties(loaded, datasets, recipe)
    aggregate: Any = InProcessSecAgg(
        list(datasets),
        parties[0].layout.size,
        rounds=recipe.rounds,
        dp_epsilon=profile.epsilon if private else None,
        dp_delta=profile.delta,
        dp_clip_norm=profile.clip,
    )
    if project is not None:
        aggregate = ProjectedNoise(profile.clip, projected_noise_std(profile, project))
    run = run_federated(parties, recipe.rounds, profile.server.around(aggregate), progress=False)
    row: dict[str, Any] = evaluate(parties[0], scenes, pixels)
    sizes = [len(d) for d in datasets.values()]
    row.update(
        samples_per_client=[min(sizes), max(sizes)],
        mean_update_norm=round(
            sum(sum(r.update_norms.values()) / len(r.update_norms) for r in run.rounds)
            / len(run.rounds),
            4,
        ),
        seconds=round(time.perf_counter() - started, 1),
    )
    if project is not None:
        row["projected"] = {"cohort": project, "noise_std": aggregate.std}
        return row
    privacy = aggregate.results[-1].privacy
    if privacy is not None:
        row["privacy"] = {
            key: privacy.to_dict()[key]
            for key in (
                "epsilon",
                "delta",
                "rounds",
                "noise_multiplier",
                "clip_norm",
                "min_clients",
                "noise_std",
                "contributors",
                "accountant",
            )
        }
    return row


def projected_noise_std(profile: Profile, cohort: int) -> float:
    """The per-element noise std of the mean a cohort of `cohort` clients gets at this
    run's epsilon, delta, rounds and clip (projected_noise.calibrated_mean_noise_std)."""
    return calibrated_mean_noise_std(
        cohort, profile.rounds, profile.epsilon, profile.delta, profile.clip
    )


def run(profile: Profile, nonprivate: bool) -> dict[str, Any]:
    """Every cohort size of `profile`: private and (optionally) non-private federations."""
    default = CaptionerRecipe()
    recipe = CaptionerRecipe(
        rounds=profile.rounds,
        train=dataclasses.replace(default.train, progress=False),
        data=dataclasses.replace(
            default.data,
            samples_per_party=profile.samples_per_party,
            test_samples=profile.test_samples,
        ),
    )
    loaded = load_model(build_base_model(progress=False))
    if profile.score == "validation":
        scenes = make_validation_set(recipe.data, VALIDATION_SAMPLES)
    else:
        scenes = make_test_set(recipe.data)
    pixels = encode_images(loaded.image_processor, [s.image for s in scenes])
    started = time.perf_counter()
    out: dict[str, Any] = {"references": references(loaded, recipe, scenes, pixels)}
    print(f"references in {time.perf_counter() - started:.0f} s", flush=True)
    if profile.rank != recipe.lora.rank:  # the federation's adapter; alpha / rank kept
        lora = recipe.lora
        recipe = dataclasses.replace(
            recipe,
            lora=dataclasses.replace(
                lora, rank=profile.rank, alpha=lora.alpha * profile.rank / lora.rank
            ),
        )
    points = []
    for n in profile.clients:
        point: dict[str, Any] = {"clients": n, "clients_per_party": n // len(DOMAINS)}
        point["private"] = federation(
            loaded, recipe, n // len(DOMAINS), profile, scenes, pixels, private=True
        )
        if nonprivate:
            point["nonprivate"] = federation(
                loaded, recipe, n // len(DOMAINS), profile, scenes, pixels, private=False
            )
        for cohort in profile.project:
            point.setdefault("projected", []).append(
                federation(
                    loaded,
                    recipe,
                    n // len(DOMAINS),
                    profile,
                    scenes,
                    pixels,
                    private=False,
                    project=cohort,
                )
            )
        print(json.dumps(summary(point)), flush=True)
        points.append(point)
    out["points"] = points
    return out


def summary(point: dict[str, Any]) -> dict[str, Any]:
    """One line per cohort size for the console."""
    line = {"n": point["clients"], "private": point["private"]["mean_recall"]}
    if "nonprivate" in point:
        line["nonprivate"] = point["nonprivate"]["mean_recall"]
    for projected in point.get("projected", []):
        line[f"projected_{projected['projected']['cohort']}"] = projected["mean_recall"]
    line["epsilon"] = round(point["private"]["privacy"]["epsilon"], 3)
    line["noise_std"] = round(point["private"]["privacy"]["noise_std"], 4)
    line["seconds"] = point["private"]["seconds"]
    return line


def merged(previous: dict[str, Any], new: dict[str, Any], profile: Profile) -> list[Any]:
    """The runs of `previous` this run does not replace, then this run."""
    runs = previous.get("runs", [])
    keep = []
    key = profile.recipe_key()
    defaults = Profile((), 0, 0, 0, 0.0, 0.0, 0.0, "").recipe_key()
    for old in runs:
        same = all(old.get(k, defaults[k]) == v for k, v in key.items() if k != "rounds")
        same = same and old.get("rounds") == profile.rounds
        old["points"] = [p for p in old["points"] if not (same and p["clients"] in profile.clients)]
        if old["points"]:
            keep.append(old)
    return [*keep, new]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, nargs="+", default=[3, 30, 90])
    p.add_argument("--rounds", type=int, default=CaptionerRecipe.rounds)
    p.add_argument("--epsilon", type=float, default=8.0)
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--clip", type=float, default=1.0, help="client DP clip norm C")
    p.add_argument("--rank", type=int, default=CaptionerRecipe().lora.rank, help="DP LoRA rank")
    p.add_argument("--server-lr", type=float, default=1.0, help="server step on the mean")
    p.add_argument("--server-momentum", type=float, default=0.0, help="server momentum")
    p.add_argument(
        "--project",
        type=int,
        nargs="*",
        default=[],
        help="also train each n with the noise level of these cohort sizes, in plaintext "
        "(a projection, not DP: ProjectedNoise)",
    )
    p.add_argument("--score", choices=("test", "validation"), default="test")
    p.add_argument("--no-nonprivate", action="store_true", help="skip the non-private runs")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--merge", action="store_true", help="keep other points of --json")
    p.add_argument("--json", type=Path, default=DEFAULT_OUT)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if any(n % len(DOMAINS) or n < len(DOMAINS) for n in args.clients):
        raise SystemExit(f"every --clients value must be a multiple of {len(DOMAINS)}")
    server = ServerStep(args.server_lr, args.server_momentum)
    if args.quick:
        profile = quick_profile(args.clip, args.score, args.rank, server, tuple(args.project))
    else:
        profile = Profile(
            tuple(args.clients),
            args.rounds,
            240,
            90,
            args.epsilon,
            args.delta,
            args.clip,
            args.score,
            args.rank,
            server,
            tuple(args.project),
        )
    started = time.perf_counter()
    result = run(profile, nonprivate=not args.no_nonprivate)
    record = {
        "date": datetime.date.today().isoformat(),
        "profile": "quick" if args.quick else "full",
        **profile.recipe_key(),
        "epsilon_target": profile.epsilon,
        "delta": profile.delta,
        "seconds": round(time.perf_counter() - started, 1),
        **result,
    }
    previous = json.loads(args.json.read_text()) if args.merge and args.json.exists() else {}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"runs": merged(previous, record, profile)}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
