"""`fedveil audit`: the leakage audit as one command, and the CI gate.

Exit status: 0 when every claimed cell holds its thresholds, 1 with one line per breach
(cell, metric, value, threshold), 2 on a configuration error (nothing is run).
Jobs run in local worker processes, or with --backend ray as Ray tasks (seeds x cells in
parallel on a local Ray or an existing cluster, runners.ray_audit). Resumable: jobs
already stored under --out with the same settings, code and dependency versions are not
recomputed; --fresh discards them. For CI: --junit writes one testcase per claimed cell,
--summary (else $GITHUB_STEP_SUMMARY, appended to) a Markdown summary, and progress bars
are off unless stdout and stderr are terminals (logs stay readable).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fedveil.commands import Command, SubParsers
from fedveil.commands.logs import add_logging_flags, configure_logging
from fedveil.errors import ConfigError

if TYPE_CHECKING:
    from fedveil.attacks.audit.executors import JobExecutor
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
        "--workers",
        type=int,
        default=2,
        help="local backend: processes (default 2: one per core; 1: inline)",
    )
    p.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local: worker processes on this machine; ray: every job a Ray task "
        "(a local Ray, or the cluster at --ray-address)",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="with --backend ray: an existing cluster (host:port, ray://host:port or auto)",
    )
    p.add_argument("--fresh", action="store_true", help="discard stored jobs and recompute")
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (also off when stdout is not a terminal)",
    )
    p.add_argument(
        "--junit",
        type=Path,
        default=None,
        metavar="FILE",
        help="write JUnit XML: one testcase per claimed cell, a failure per breach",
    )
    p.add_argument(
        "--summary",
        type=Path,
        default=None,
        metavar="FILE",
        help="write a Markdown summary for a CI job page "
        "(default: append to $GITHUB_STEP_SUMMARY when it is set)",
    )
    add_logging_flags(p, default_level="WARNING")


def run(args: argparse.Namespace) -> int:
    from fedveil.attacks.audit.config import load_config

    configure_logging(args.log_level, args.log_format)
    try:
        config = load_config(args.config, args.profile)
        if args.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {args.workers}")
        if args.ray_address and args.backend != "ray":
            raise ConfigError("--ray-address needs --backend ray")
        if args.ray_address:
            from fedveil.runners.ray_backend import probe  # a socket check; no Ray import

            probe(args.ray_address)
        if args.out.exists() and not args.out.is_dir():
            raise ConfigError(f"--out {args.out} exists and is not a directory")
        for flag, path in (("--junit", args.junit), ("--summary", args.summary)):
            _check_output_file(flag, path)
    except ConfigError as exc:
        print(f"fedveil audit: configuration error: {exc}", file=sys.stderr)
        return 2
    from fedveil.attacks.audit.runner import run_audit
    from fedveil.runners.aggregators import real_aggregators

    if args.fresh and (args.out / "work").is_dir():
        shutil.rmtree(args.out / "work")
    try:
        result = run_audit(
            config,
            args.out,
            real_aggregators,
            workers=args.workers,
            progress=show_progress(args.no_progress),
            executor=_executor(args),
        )
    except ConfigError as exc:  # e.g. a local Ray that would not start
        print(f"fedveil audit: configuration error: {exc}", file=sys.stderr)
        return 2
    _print_matrix(result.audit)
    _write_ci_files(result.audit, args.junit, args.summary)
    if result.reused:
        print(f"reused {len(result.reused)} stored job(s); --fresh recomputes them")
    for key, error in result.errors.items():
        print(f"ERROR job {key}: {error}", file=sys.stderr)
    print(f"report: {args.out / 'report.json'}, {args.out / 'report.html'}")
    for line in result.audit.notes():  # cells that could not be judged, and why
        print(line)
    if not result.passed:
        for line in result.audit.breaches:
            print(line)
        return 1
    print("all claimed protections held")
    return 0


def _executor(args: argparse.Namespace) -> JobExecutor | None:
    """The Ray executor for --backend ray (Ray is imported only when a job runs)."""
    if args.backend != "ray":
        return None
    from fedveil.runners.ray_audit import RayJobs

    return RayJobs(args.ray_address)


def show_progress(no_progress: bool) -> bool:
    """Bars only for a person watching: off with --no-progress or when stdout or stderr
    (where tqdm draws) is not a terminal, e.g. in CI, a pipe or a log file."""
    return not no_progress and sys.stdout.isatty() and sys.stderr.isatty()


def _check_output_file(flag: str, path: Path | None) -> None:
    """Refuse an unwritable report path before anything runs, not after the audit."""
    if path is None:
        return
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a directory")
    if not path.parent.is_dir():
        raise ConfigError(f"{flag} {path}: no directory {path.parent}")


def _write_ci_files(report: AuditReport, junit: Path | None, summary: Path | None) -> None:
    from fedveil.attacks.audit.junit import write_junit
    from fedveil.attacks.audit.markdown import write_summary

    if junit is not None:
        write_junit(report, junit)
        print(f"junit: {junit}")
    if summary is not None:
        write_summary(report, summary)
        print(f"summary: {summary}")
    elif step_summary := os.environ.get("GITHUB_STEP_SUMMARY"):
        try:  # CI's own file: a summary that cannot be written must not hide the verdict
            write_summary(report, Path(step_summary), append=True)
        except OSError as exc:
            print(f"fedveil audit: GITHUB_STEP_SUMMARY not written: {exc}", file=sys.stderr)


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
