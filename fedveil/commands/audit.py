"""`fedveil audit`: the leakage audit as one command, and the CI gate.

Exit status: 0 when every claimed cell holds its thresholds, 1 with one line per breach
(cell, metric, value, threshold), 2 on a configuration error (nothing is run).
Resumable: jobs already stored under --out with the same settings are not recomputed;
--fresh discards them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fedveil.commands import Command, SubParsers
from fedveil.commands.logs import add_logging_flags, configure_logging
from fedveil.errors import ConfigError

if TYPE_CHECKING:
    from fedveil.attacks.audit.report import AuditReport


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser(
        "audit",
        help="run every attack against every protection; write report.json and report.html",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="audit TOML (protections, attacks, DP noise, thresholds, claims); "
        "default: every protection and attack with the default thresholds",
    )
    p.add_argument("--out", type=Path, required=True, help="directory for the report and work")
    p.add_argument(
        "--profile",
        choices=("quick", "full"),
        default=None,
        help="quick: small attacks, a few minutes on 2 cores; full: the benchmark settings "
        "(default: the config's, else quick)",
    )
    p.add_argument(
        "--workers", type=int, default=2, help="processes (default 2: one per core; 1: inline)"
    )
    p.add_argument("--fresh", action="store_true", help="discard stored jobs and recompute")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_logging_flags(p, default_level="WARNING")


def run(args: argparse.Namespace) -> int:
    from fedveil.attacks.audit.config import load_config

    configure_logging(args.log_level, args.log_format)
    try:
        config = load_config(args.config, args.profile)
        if args.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {args.workers}")
        if args.out.exists() and not args.out.is_dir():
            raise ConfigError(f"--out {args.out} exists and is not a directory")
    except ConfigError as exc:
        print(f"fedveil audit: configuration error: {exc}", file=sys.stderr)
        return 2
    from fedveil.attacks.audit.runner import run_audit
    from fedveil.runners.aggregators import real_aggregators

    if args.fresh and (args.out / "work").is_dir():
        shutil.rmtree(args.out / "work")
    result = run_audit(
        config,
        args.out,
        real_aggregators,
        workers=args.workers,
        progress=not args.no_progress,
    )
    _print_matrix(result.audit)
    if result.reused:
        print(f"reused {len(result.reused)} stored job(s); --fresh recomputes them")
    for key, error in result.errors.items():
        print(f"ERROR job {key}: {error}", file=sys.stderr)
    print(f"report: {args.out / 'report.json'}, {args.out / 'report.html'}")
    if not result.passed:
        for line in result.audit.breaches:
            print(line)
        return 1
    print("all claimed protections held")
    return 0


def _print_matrix(report: AuditReport) -> None:
    print(f"{'protection':<18} {'attack':<28} {'status':<18} metrics")
    for cell in report.cells:
        metrics = ", ".join(f"{k}={_number(v)}" for k, v in cell.metrics.items())
        print(f"{cell.protection.value:<18} {cell.attack.value:<28} {cell.status:<18} {metrics}")


def _number(value: float) -> str:
    """As report.json spells it: rounded to 6 digits, infinities as "inf" / "-inf"."""
    from fedveil.attacks.measure.records import finite_json  # the attack suite needs torch

    written = finite_json(round(float(value), 6))
    return f"{written:.3g}" if isinstance(written, float) else str(written)


COMMAND = Command("audit", add_parser, run)
