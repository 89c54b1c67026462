"""Contribution scores from protected coalition releases, against exact Shapley values.

Four organisations of deliberately different value on the city-safety task:
  energy            its full, clean data
  energy-dup        a duplicate of energy (same scenes and captions, its own name)
  residential-half  half of its data
  urban-noisy       its full data with 30% of the captions in another domain's words
                    (learner.quality.corruption)

truth    exact Shapley values in the clear: each of the 15 coalitions trains its own
         plaintext federation for --rounds rounds (organisations as whole parties); a
         coalition's value is minus the validation caption loss of its final adapter
         (learner.contribution.utility), the empty coalition's the base adapter's.
private  one federation of office clients (each organisation split into --clients
         offices, so a coalition of one organisation is a secure aggregate of that many
         clients); each round every coalition's clients run real in-process SecAgg+
         with client-level DP (runners.aggregators.InProcessSecAgg), and the round's
         Shapley values come from the candidates global + release
         (learner.contribution.private_rounds). Every release is charged to each member
         client's ledger; epsilon is the largest any client spent. Run at each --epsilon,
         and without DP ("inf": SecAgg+ only) to separate the round-wise approximation
         from the noise.
Reported: each run's scores, Spearman's rho against the truth, epsilon, releases, seconds;
the same run's plain federation of all four (no scoring) is the seconds baseline.

Usage:
  python benchmarks/contribution_bench.py [--rounds 4] [--clients 3]
      [--epsilon inf 512 64 8] [--delta 1e-5] [--clip 1.0] [--json OUT]
  python benchmarks/contribution_bench.py --quick      # tiny data, 2 rounds
Default OUT: benchmarks/results/contribution.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedveil.errors import ConfigError
from fedveil.learner.contribution import (
    exact_shapley,
    planned_releases_per_client,
    private_contributions,
    spearman,
    validation_utility,
)
from fedveil.learner.data.concepts import Domain
from fedveil.learner.data.datasets import (
    PartyDataset,
    SceneExample,
    make_party_datasets,
    make_validation_set,
    split_party_dataset,
)
from fedveil.learner.federated_local import (
    CaptionerRecipe,
    make_client_parties,
    make_parties,
    run_federated,
)
from fedveil.learner.models.base import build_base_model
from fedveil.learner.models.loading import LoadedModel, load_model
from fedveil.learner.quality import corrupt_dataset
from fedveil.learner.training.batches import encode_images
from fedveil.runners.aggregators import InProcessSecAgg
from fedveil.secagg.dp import PrivacyBudget, PrivacyLedger

DEFAULT_OUT = Path("benchmarks/results/contribution.json")
VALIDATION_SAMPLES = 45


def organisations(recipe: CaptionerRecipe) -> dict[str, PartyDataset]:
    """The four organisations of different value (see the module docstring)."""
    base = make_party_datasets(recipe.data)
    energy, residential, urban = base["energy"], base["residential"], base["urban"]
    half = residential.examples[: len(residential) // 2]
    noisy = corrupt_dataset(urban, 0.3, "wrong-domain").dataset
    return {
        "energy": energy,
        "energy-dup": PartyDataset("energy-dup", Domain.ENERGY, energy.examples),
        "residential-half": PartyDataset("residential-half", Domain.RESIDENTIAL, half),
        "urban-noisy": PartyDataset("urban-noisy", Domain.URBAN, noisy.examples),
    }


def truth(
    loaded: LoadedModel,
    orgs: dict[str, PartyDataset],
    recipe: CaptionerRecipe,
    scenes: Sequence[SceneExample],
    pixels: Any,
) -> tuple[dict[str, float], dict[str, float], float]:
    """Exact Shapley values in the clear, the coalition values, and the seconds of the
    grand coalition's federation (the plain-federation baseline)."""
    values: dict[str, float] = {}
    grand_seconds = math.nan

    def value(coalition: frozenset[str]) -> float:
        nonlocal grand_seconds
        members = {name: orgs[name] for name in orgs if name in coalition or not coalition}
        parties = make_parties(loaded, members, recipe)
        utility = validation_utility(parties[0], scenes, pixels)
        if coalition:
            started = time.perf_counter()
            run_federated(parties, recipe.rounds, progress=False)
            if len(coalition) == len(orgs):
                grand_seconds = time.perf_counter() - started
        v = utility(parties[0].global_vector)
        values["+".join(sorted(coalition)) or "{}"] = round(v, 5)
        print(f"truth {sorted(coalition)}: {v:.4f}", flush=True)
        return v

    phi = exact_shapley(list(orgs), value)
    return phi, values, grand_seconds


def private(
    loaded: LoadedModel,
    orgs: dict[str, PartyDataset],
    recipe: CaptionerRecipe,
    scenes: Sequence[SceneExample],
    pixels: Any,
    clients: int,
    epsilon: float | None,
    delta: float,
    clip: float,
) -> dict[str, Any]:
    """One contribution run over office clients; epsilon None: SecAgg+ without DP."""
    offices = {org: split_party_dataset(data, clients) for org, data in orgs.items()}
    flat = {cid: data for split in offices.values() for cid, data in split.items()}
    parties = {p.name: p for p in make_client_parties(loaded, flat, recipe)}
    grouped = {org: [parties[cid] for cid in split] for org, split in offices.items()}
    size = next(iter(parties.values())).layout.size

    def release(ids: Sequence[str], planned: int) -> InProcessSecAgg:
        return InProcessSecAgg(
            ids, size, rounds=planned, dp_epsilon=epsilon, dp_delta=delta, dp_clip_norm=clip
        )

    ledgers = None
    if epsilon is not None:
        budget = PrivacyBudget(epsilon * 1.01, delta)
        ledgers = {cid: PrivacyLedger(budget, owner=cid) for cid in parties}
    utility = validation_utility(next(iter(parties.values())), scenes, pixels)
    started = time.perf_counter()
    run = private_contributions(grouped, recipe.rounds, release, utility, ledgers)
    seconds = time.perf_counter() - started
    return {
        "epsilon_target": "inf" if epsilon is None else epsilon,
        "scores": {k: round(v, 5) for k, v in run.shapley.items()},
        "epsilon_spent_max": max(run.epsilon.values()) if run.epsilon else None,
        "releases_per_round": run.releases_per_round,
        "releases_per_client": planned_releases_per_client(len(orgs), recipe.rounds),
        "final_utility": round(run.rounds[-1].values[frozenset(orgs)], 5),
        "seconds": round(seconds, 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    default = CaptionerRecipe()
    data = default.data
    if args.quick:
        data = dataclasses.replace(data, samples_per_party=24, test_samples=4)
    recipe = CaptionerRecipe(
        rounds=args.rounds, train=dataclasses.replace(default.train, progress=False), data=data
    )
    loaded = load_model(build_base_model(progress=False))
    scenes = make_validation_set(recipe.data, 8 if args.quick else VALIDATION_SAMPLES)
    pixels = encode_images(loaded.image_processor, [s.image for s in scenes])
    orgs = organisations(recipe)
    started = time.perf_counter()
    phi, values, grand_seconds = truth(loaded, orgs, recipe, scenes, pixels)
    out: dict[str, Any] = {
        "truth": {
            "shapley": {k: round(v, 5) for k, v in phi.items()},
            "values": values,
            "seconds": round(time.perf_counter() - started, 1),
        },
        "plain_federation_seconds": round(grand_seconds, 1),
    }
    print("truth", json.dumps(out["truth"]["shapley"]), flush=True)
    runs = []
    for eps in args.epsilon:
        epsilon = None if eps == "inf" else float(eps)
        row = private(
            loaded, orgs, recipe, scenes, pixels, args.clients, epsilon, args.delta, args.clip
        )
        row["spearman"] = round(spearman(row["scores"], phi), 4)
        row["seconds_vs_plain_federation"] = round(row["seconds"] / grand_seconds, 2)
        print(json.dumps(row), flush=True)
        runs.append(row)
    out["private"] = runs
    return out


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--clients", type=int, default=3, help="office clients per organisation")
    p.add_argument("--epsilon", nargs="+", default=["inf", "512", "64", "8"])
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--clip", type=float, default=1.0, help="client DP clip norm C")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", type=Path, default=DEFAULT_OUT)
    args = p.parse_args()
    if args.quick:
        args.rounds, args.epsilon = 2, ["inf", "64"]
    for eps in args.epsilon:
        if eps != "inf" and not (float(eps) > 0 and math.isfinite(float(eps))):
            p.error(f"--epsilon values must be positive numbers or inf, got {eps}")
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
        "rounds": args.rounds,
        "clients_per_organisation": args.clients,
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


if __name__ == "__main__":
    main()
