"""`fedveil contributions`: each organisation's contribution to the federated model, with
the epsilon each organisation's clients spent on it. `--design projected` (the default):
one DP number per organisation and round (learner.contribution.projected_scores);
`--design cumulative`: one d-dimensional DP release per organisation at the end, each
coalition's model evaluated (learner.contribution.cumulative_scores; it needs on the
order of 100 offices per organisation for its noise, benchmarks/README.md).

Runs in this process on the built-in captioner (or --model) and the synthetic
city-safety data: four organisations of deliberately different value (one domain held
twice, one halved, one with 30% wrong-domain captions; learner.contribution.scenario),
each split into --offices SecAgg+ clients. --truth also computes the exact Shapley
values in the clear (every coalition retrained: 15 federations, minutes) and Spearman's
rho between the two.

Exit status: 0 with the table printed; 2 for bad arguments (one line); 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from fedveil.commands import Command, SubParsers
from fedveil.errors import ConfigError, FedveilError

DOMAIN_NAMES = ("energy", "residential", "urban")
DESIGNS = ("projected", "cumulative")
DEFAULT_CLIP = {"projected": 0.5, "cumulative": 10.0}


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser(
        "contributions",
        help="each organisation's contribution score under client-level DP, with its epsilon",
    )
    p.add_argument("--epsilon", type=float, default=8.0, help="DP budget per client (default 8)")
    p.add_argument("--delta", type=float, default=1e-5, help="DP delta (default 1e-5)")
    p.add_argument("--rounds", type=int, default=4, help="federated rounds (default 4)")
    p.add_argument("--offices", type=int, default=3, help="SecAgg+ clients per organisation (3)")
    p.add_argument(
        "--design",
        choices=DESIGNS,
        default="projected",
        help="projected: one DP number per organisation and round (default); cumulative: "
        "one DP release of the whole update per organisation, coalition models evaluated",
    )
    p.add_argument(
        "--clip",
        type=float,
        default=None,
        help="client DP clip: of a projected number (default 0.5) or of a centred whole-run "
        "update (cumulative, default 10)",
    )
    p.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    p.add_argument(
        "--samples-per-party", type=int, default=240, help="examples per organisation (240)"
    )
    p.add_argument("--validation", type=int, default=45, help="validation scenes (45)")
    p.add_argument("--duplicate", choices=DOMAIN_NAMES, default="energy")
    p.add_argument("--halved", choices=DOMAIN_NAMES, default="residential")
    p.add_argument("--noisy", choices=DOMAIN_NAMES, default="urban")
    p.add_argument("--truth", action="store_true", help="also exact Shapley in the clear")
    p.add_argument(
        "--model", type=Path, default=None, help="base model (default: the built-in captioner)"
    )
    p.add_argument("--json", type=Path, default=None, help="write the scores here")


def _check(args: argparse.Namespace) -> None:
    if args.clip is None:
        args.clip = DEFAULT_CLIP[args.design]
    for name in ("rounds", "offices", "samples_per_party", "validation"):
        value = getattr(args, name)
        if value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.offices < 2:
        raise ConfigError(
            f"--offices must be at least 2 (a release is a secure aggregate), got {args.offices}"
        )
    if not (math.isfinite(args.epsilon) and args.epsilon > 0):
        raise ConfigError(f"--epsilon must be a positive number, got {args.epsilon}")
    if not (math.isfinite(args.delta) and 0 < args.delta < 1):
        raise ConfigError(f"--delta must be in (0, 1), got {args.delta}")
    if not (math.isfinite(args.clip) and args.clip > 0):
        raise ConfigError(f"--clip must be a positive number, got {args.clip}")
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    if len({args.duplicate, args.halved, args.noisy}) != 3:
        raise ConfigError("--duplicate, --halved and --noisy must name three different domains")


def contributions(args: argparse.Namespace) -> dict[str, Any]:
    """Run the scoring (and the truth) and return the report."""
    import dataclasses

    from fedveil.learner.contribution import spearman, validation_utility
    from fedveil.learner.contribution.scenario import ValueScenario, organisations
    from fedveil.learner.contribution.secure_run import (
        ScoringPlan,
        secure_cumulative_run,
        secure_projected_run,
    )
    from fedveil.learner.contribution.truth import cleartext_shapley
    from fedveil.learner.data.concepts import Domain
    from fedveil.learner.data.datasets import (
        CityDataConfig,
        client_name,
        make_validation_set,
    )
    from fedveil.learner.federated_local import CaptionerRecipe
    from fedveil.learner.models.base import build_base_model
    from fedveil.learner.models.loading import load_model
    from fedveil.learner.training.batches import encode_images

    default = CaptionerRecipe()
    data = CityDataConfig(seed=args.seed, samples_per_party=args.samples_per_party)
    recipe = CaptionerRecipe(
        rounds=args.rounds, train=dataclasses.replace(default.train, progress=False), data=data
    )
    scenario = ValueScenario(Domain(args.duplicate), Domain(args.halved), Domain(args.noisy))
    orgs = organisations(data, scenario)
    if any(len(d) < args.offices for d in orgs.values()):
        raise ConfigError(f"--samples-per-party is too small for {args.offices} offices each")
    loaded = load_model(args.model if args.model is not None else build_base_model(progress=False))
    scenes = make_validation_set(data, args.validation)
    plan = ScoringPlan(f"epsilon {args.epsilon:g}", args.epsilon)
    secure_run = secure_cumulative_run if args.design == "cumulative" else secure_projected_run
    run = secure_run(loaded, orgs, recipe, scenes, args.offices, [plan], args.delta, args.clip)
    result = run.results[0]
    offices = range(args.offices)  # the client ids split_party_dataset gave each office
    spent = {
        org: max(result.epsilon[client_name(org, k, args.offices)] for k in offices) for org in orgs
    }
    report: dict[str, Any] = {
        "scores": result.shapley,
        "epsilon_spent": spent,
        "epsilon_target": args.epsilon,
        "delta": args.delta,
        "rounds": args.rounds,
        "offices_per_organisation": args.offices,
        "design": args.design,
        "releases_per_client": 1 if args.design == "cumulative" else args.rounds,
        "clip": args.clip,
        "seconds": round(run.seconds, 1),
    }
    if args.truth:
        pixels = encode_images(loaded.image_processor, [s.image for s in scenes])
        truth = cleartext_shapley(
            loaded, orgs, recipe, lambda p: validation_utility(p, scenes, pixels), args.offices
        )
        report["truth"] = truth.shapley
        report["spearman"] = spearman(_ties(result.shapley), _ties(truth.shapley))
    return report


def _ties(scores: dict[str, float]) -> dict[str, float]:
    """Rounded to 9 decimals: equal values summed in another order tie."""
    return {k: round(v, 9) for k, v in scores.items()}


def format_report(report: dict[str, Any]) -> str:
    """The table: organisation, score, epsilon spent (and the truth with --truth)."""
    truth = report.get("truth")
    header = f"{'organisation':<20} {'score':>10} {'epsilon':>8}"
    header += f" {'exact Shapley':>14}" if truth else ""
    lines = [header, "-" * len(header)]
    for org, score in report["scores"].items():
        line = f"{org:<20} {score:>10.4f} {report['epsilon_spent'][org]:>8.2f}"
        line += f" {truth[org]:>14.4f}" if truth else ""
        lines.append(line)
    releases = (
        "one release per client in all"
        if report["design"] == "cumulative"
        else "one release per client and round"
    )
    lines.append(
        f"{report['design']} design; delta {report['delta']:g}; {report['rounds']} rounds, "
        f"{releases}, {report['offices_per_organisation']} SecAgg+ clients per organisation"
    )
    if truth:
        lines.append(f"Spearman vs exact Shapley: {report['spearman']:.3f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        _check(args)
        report = contributions(args)
    except FedveilError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    print(format_report(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


COMMAND = Command("contributions", add_parser, run)
