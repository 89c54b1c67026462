"""`fedveil simulate`: one SecAgg+ round of n simulated clients, in this process or on Ray.

`--backend local` is the one-process simulation (runners.simulation.run_round);
`--backend ray` runs the clients as real ClientSessions in Ray actors against the real
ServerRound here (runners.ray_backend), on a local Ray or the cluster at --ray-address.
Both print one summary line (and a progress bar on a terminal with the Ray backend) and
write the same report with --json. Ray is imported only when the Ray backend runs, so the
rest of the CLI starts without it. Exit 0: the round finished and its decoded sum equals
the plaintext computation; 1: it failed or is not exact; 2: bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fedveil.commands import Command, SubParsers
from fedveil.errors import FedveilError
from fedveil.runners.scale_report import ScaleReport
from fedveil.runners.scale_setup import SURVIVABLE_STAGES, ScaleOptions
from fedveil.runners.simulation import CLIENT_STAGES
from fedveil.secagg.protocol.stages import Stage


def _stage_choice(value: str) -> tuple[Stage, ...]:
    if value == "survivable":
        return SURVIVABLE_STAGES
    if value == "any":
        return CLIENT_STAGES
    try:
        return (Stage(value),)
    except ValueError as exc:
        names = ", ".join(["survivable", "any", *(s.value for s in CLIENT_STAGES)])
        raise argparse.ArgumentTypeError(
            f"unknown stage {value!r}; choose one of: {names}"
        ) from exc


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser(
        "simulate",
        help="run one SecAgg+ round of n simulated clients, in this process or on Ray",
    )
    p.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local: one process; ray: clients in Ray actors (default local)",
    )
    p.add_argument("--clients", type=int, default=100, help="number of clients n (default 100)")
    p.add_argument("--dimension", type=int, default=1_000_000, help="update length d (default 1e6)")
    p.add_argument(
        "--neighbours",
        type=int,
        default=None,
        help="degree k (default floor(2 log2 n + 1), the protocol's O(log n))",
    )
    p.add_argument("--drop", type=float, default=0.1, help="fraction of clients that drop out")
    p.add_argument(
        "--drop-stage",
        type=_stage_choice,
        default=SURVIVABLE_STAGES,
        help="where dropped clients vanish: survivable (default: a random stage the round "
        "survives, i.e. any but consistency-check), any (all five), or one stage name",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the inputs and dropout schedule (keys and masks stay OS-random)",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="join this Ray cluster (ray.init(address=...)); default a local Ray",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="Ray actors holding the clients (default: the CPUs, at most 2 locally)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")


def _fail(message: str) -> int:
    print(f"fedveil simulate: error: {message}", file=sys.stderr)
    return 2


def _check(args: argparse.Namespace) -> str | None:
    """The first problem with the arguments, in one line, or None."""
    if args.clients < 2:
        return "--clients must be at least 2"
    if args.dimension < 1:
        return "--dimension must be at least 1"
    if not 0.0 <= args.drop < 1.0:
        return "--drop must be in [0, 1)"
    if args.neighbours is not None and not 1 <= args.neighbours <= args.clients - 1:
        return f"--neighbours must be in [1, {args.clients - 1}] for {args.clients} clients"
    if args.workers is not None and args.workers < 1:
        return "--workers must be at least 1"
    if args.backend == "local" and (args.ray_address or args.workers):
        return "--ray-address and --workers need --backend ray"
    return None


@contextmanager
def _progress_bar(enabled: bool, total: int) -> Iterator[Callable[[int], None] | None]:
    """A tqdm bar on stderr counting client-stages (n per stage), if it is a terminal."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield None
        return
    with tqdm(total=total, unit="msg", desc="clients x stages", leave=False) as bar:
        yield bar.update


def _run_ray(options: ScaleOptions, args: argparse.Namespace) -> ScaleReport | str:
    """The Ray round, or a one-line reason it could not start."""
    from fedveil.runners import ray_backend

    try:
        started = ray_backend.connect(args.ray_address)
    except ImportError:
        return "the ray backend needs Ray: pip install 'fedveil[sim]'"
    except Exception as exc:  # ray.init raises many kinds (ConnectionError, RuntimeError)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"could not start or join Ray: {first}"
    try:
        with _progress_bar(not args.no_progress, len(CLIENT_STAGES) * options.clients) as bar:
            return ray_backend.run_ray_round(
                options, workers=args.workers, address=args.ray_address, progress=bar
            )
    finally:
        if started:
            ray_backend.shutdown()


def run(args: argparse.Namespace) -> int:
    problem = _check(args)
    if problem is not None:
        return _fail(problem)
    try:
        options = ScaleOptions(
            clients=args.clients,
            dimension=args.dimension,
            neighbours=args.neighbours,
            drop=args.drop,
            drop_stages=args.drop_stage,
            seed=args.seed,
        )
        if args.backend == "ray":
            outcome = _run_ray(options, args)
            if isinstance(outcome, str):
                return _fail(outcome)
            report = outcome
        else:
            from fedveil.runners.local_backend import run_local_round

            report = run_local_round(options)
    except FedveilError as exc:
        return _fail(str(exc))
    print(report.summary_line())
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return 0 if report.ok else 1


COMMAND = Command("simulate", add_parser, run)
