"""`fedveil demo`: the command-line face of fedveil/demo.

By default the demo is a deployment on loopback (demo/deploy.py): a `fedveil server`
process and one `fedveil train` process per party, each in its own folder under
--workdir, then each party's `fedveil train --alone`; the table comes from the parties'
own evaluations. `--in-process` runs the same federation inside this process
(demo/run.py), which is also where the DP variants (--dp) run.

Exit status: 0 with the table printed; 1 when a process of the deployment failed (its
last log lines are printed); 2 for bad arguments; 130 when interrupted.

Why the flags come from fedveil.demo.choices: `--mode` and `--dp` are spelled as the
server spells them (secagg.modes), and that module is light enough to import while the
training stack loads only when the demo runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedveil.commands import Command, SubParsers
from fedveil.commands.logs import add_logging_flags, configure_logging
from fedveil.demo.choices import DP_KINDS, MODES
from fedveil.errors import ConfigError, FedveilError
from fedveil.secagg.modes import AggregationMode, DPKind

# Literal, not AggregationVariant: importing learner.lora pulls in torch and peft (seconds),
# which every `fedveil client` process would pay at start-up. tests/demo/test_demo.py checks
# that these match the enum.
VARIANTS = ("fedavg", "ffa")


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser(
        "demo",
        help="three organisations fine-tune the built-in captioner over the secure service",
    )
    p.add_argument(
        "--mode",
        choices=[mode.value for mode in MODES],
        default=AggregationMode.SECAGG.value,
        help="how the service combines the parties' updates (default secagg)",
    )
    p.add_argument("--rounds", type=int, default=20, help="federated rounds (default 20)")
    p.add_argument("--parties", type=int, default=3, help="number of parties, 2 or 3")
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="base model directory (default: the built-in captioner, built on first use)",
    )
    p.add_argument(
        "--variant",
        choices=VARIANTS,
        default="ffa",
        help="ffa (default): FFA-LoRA, A frozen, exact aggregate; fedavg: average A and B",
    )
    p.add_argument("--adapter-out", type=Path, default=Path("fedveil-demo-adapter"))
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--dp",
        choices=[kind.value for kind in DP_KINDS],
        default=DPKind.NONE.value,
        help="client: client-level distributed DP inside SecAgg; sample: Opacus DP-SGD in "
        "each party, local-only baselines stay non-private "
        "(budget --dp-target-epsilon, --dp-delta)",
    )
    p.add_argument(
        "--dp-target-epsilon",
        type=float,
        default=8.0,
        help="DP: epsilon over the whole run the noise is calibrated to (default 8)",
    )
    p.add_argument(
        "--dp-delta", type=float, default=1e-5, help="DP: delta over the whole run (1e-5)"
    )
    # The names before the CLI shared `fedveil server`'s DP vocabulary; kept, not shown.
    for old, new in (("--epsilon", "dp_target_epsilon"), ("--delta", "dp_delta")):
        p.add_argument(old, dest=new, type=float, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument(
        "--dp-clip-norm",
        type=float,
        default=1.0,
        help="client DP: L2 clip C of an update; sample DP: per-sample gradient clip",
    )
    p.add_argument(
        "--clients-per-party",
        type=int,
        default=1,
        help="--in-process: split each organisation's data into N branch offices, each its "
        "own SecAgg client (client DP protects each office; N > 1 runs the rounds in "
        "process; benchmarks/README.md, 'Client-level DP vs cohort size')",
    )
    p.add_argument(
        "--dp-rank",
        type=int,
        default=None,
        help="--dp client with --clients-per-party > 1: the private federation's LoRA rank, "
        "1-8 (default 8, the recipe's); each organisation alone keeps rank 8",
    )
    p.add_argument(
        "--server-lr",
        type=float,
        default=None,
        help="--clients-per-party > 1: the server's step size on each released mean "
        "(post-processing, no privacy cost; default 1)",
    )
    p.add_argument(
        "--server-momentum",
        type=float,
        default=None,
        help="--clients-per-party > 1: the server's momentum over released means, in [0, 1) "
        "(default 0)",
    )
    p.add_argument(
        "--ranks",
        default=None,
        metavar="R1,R2,...",
        help="--in-process: one LoRA rank per party, e.g. 4,8,16 (the largest is the "
        "federation's; zero-padded, per-group weighted mean inside SecAgg+)",
    )
    p.add_argument(
        "--text-only-party",
        action="append",
        default=[],
        metavar="NAME",
        help="--in-process: a party with captions but no images (trains the decoder-side "
        "adapters only); repeatable",
    )
    p.add_argument(
        "--buffer",
        type=int,
        default=None,
        metavar="K",
        help="--in-process: buffered (FedBuff) rounds, each a SecAgg+ round among the first "
        "K parties to finish on a simulated clock; --rounds counts buffers",
    )
    p.add_argument(
        "--slow-party",
        default=None,
        metavar="NAME",
        help="with --buffer: the organisation whose local run takes --slowdown times as long",
    )
    p.add_argument(
        "--slowdown", type=float, default=5.0, help="with --slow-party: how much slower (5)"
    )
    p.add_argument(
        "--staleness",
        choices=("polynomial", "constant"),
        default="polynomial",
        help="with --buffer: a stale update's weight, (1 + tau)^-1/2 (FedBuff) or constant",
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run the federation inside this process (the service on a private thread) "
        "instead of as separate server and party processes",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path("fedveil-demo"),
        help="the deployment's folder: operator/ and parties/NAME/ (default ./fedveil-demo; "
        "replaced by the next run)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars or lines")
    add_logging_flags(p, default_level="WARNING")


def run(args: argparse.Namespace) -> int:
    from fedveil.demo.choices import parse_rank_list
    from fedveil.demo.options import DemoOptions
    from fedveil.demo.processes import ProcessFailed
    from fedveil.demo.table import format_table
    from fedveil.learner.lora.config import AggregationVariant

    configure_logging(args.log_level, args.log_format)
    try:
        options = DemoOptions(
            mode=AggregationMode(args.mode),
            rounds=args.rounds,
            parties=args.parties,
            model_dir=args.model,
            adapter_dir=args.adapter_out,
            json_out=args.json,
            variant=AggregationVariant(args.variant),
            seed=args.seed,
            dp=DPKind(args.dp),
            epsilon=args.dp_target_epsilon,
            delta=args.dp_delta,
            dp_clip_norm=args.dp_clip_norm,
            progress=not args.no_progress,
            workdir=args.workdir,
            clients_per_party=args.clients_per_party,
            ranks=None if args.ranks is None else parse_rank_list(args.ranks),
            text_only_party=tuple(args.text_only_party),
            buffer=args.buffer,
            slow_party=args.slow_party,
            slowdown=args.slowdown,
            staleness=args.staleness,
            dp_rank=args.dp_rank,
            server_lr=args.server_lr,
            server_momentum=args.server_momentum,
        )
        if args.in_process:
            from fedveil.demo.run import run_demo

            report = run_demo(options)
        else:
            from fedveil.demo.deploy import check_deployable, run_deployment

            if options.clients_per_party > 1:
                raise ConfigError("--clients-per-party > 1 runs only with --in-process")
            if options.ranks is not None or options.text_only_party:
                raise ConfigError("--ranks and --text-only-party run only with --in-process")
            if options.buffer is not None:
                raise ConfigError("--buffer runs only with --in-process")
            check_deployable(options)  # before the base model is built
            report = run_deployment(options, _say if options.progress else _quiet)
    except ProcessFailed as exc:
        if exc.tail:
            print(exc.tail, file=sys.stderr)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except FedveilError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted (the processes were stopped)", file=sys.stderr)
        return 130
    print(format_table(report))
    return 0


def _say(line: str) -> None:
    print(line, flush=True)


def _quiet(line: str) -> None:
    del line


COMMAND = Command("demo", add_parser, run)
