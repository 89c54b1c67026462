"""`fedveil attack`: point the update attacks at a team's own model, delta and records.

    fedveil attack --model-dir models/base --delta update.safetensors \
        --lora-config operator/federation.toml --records suspects.jsonl --out attack-report

Given the base model directory (loaded offline), an adapter delta as a party sends it
(`.safetensors` or `.npz` keyed by canonical tensor names; or several, with a leading
client axis, as a server holds them: attacks.own.delta_file), the adapter settings (a
plan from `fedveil plan`, a `[lora]` table, or the flags `fedveil plan` takes) and
optionally the records a team suspects leak (JSONL of "text" or "caption"), it runs the
update attacks that apply (token recovery from the LoRA factors, the LM head's token
bag) and writes report.json, report.md and report.html with each record's score next to
the data-free baseline, records ranked by exposure.

Exit status: 0 when the report was written (and, with --fail-on-leak, no given record
was recovered); 1 with --fail-on-leak when one was; 2 for bad arguments or files (a Hub
name, a delta that does not fit the adapter, a malformed record), with one line that
says what to fix.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedveil.commands import Command, SubParsers
from fedveil.commands.lora_flags import add_lora_flags
from fedveil.errors import ConfigError, FedveilError


def add_parser(sub: SubParsers) -> argparse.ArgumentParser:
    """Register `attack`; dispatched by `run`."""
    p = sub.add_parser(
        "attack",
        help="attack your own adapter delta (and records) with the update attacks",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--model-dir", type=Path, required=True, help="the base model (local folder)")
    p.add_argument(
        "--delta",
        type=Path,
        required=True,
        help=".safetensors or .npz delta keyed by canonical adapter tensor names "
        "(a leading client axis: several uploads)",
    )
    p.add_argument(
        "--lora-config",
        type=Path,
        default=None,
        help="federation.toml from `fedveil plan`, or a TOML file with a [lora] table",
    )
    add_lora_flags(p, unset_defaults=True)
    p.add_argument(
        "--records", type=Path, default=None, help='JSONL of {"text": ...} or {"caption": ...}'
    )
    p.add_argument("--out", type=Path, required=True, help="directory for the reports")
    p.add_argument(
        "--views",
        choices=("each", "mean", "both"),
        default="both",
        help="for a file of several uploads: attack each, their mean (what SecAgg "
        "reveals), or both (default)",
    )
    p.add_argument("--max-length", type=int, default=None, help="positions token recovery tries")
    p.add_argument(
        "--top", type=int, default=None, help="list only the N most exposed records (default all)"
    )
    p.add_argument(
        "--fail-on-leak", action="store_true", help="exit 1 when a given record is recovered"
    )
    return p


def _source(args: argparse.Namespace) -> object:
    from fedveil.attacks.own.lora_source import settings_from_file, settings_from_flags

    flags = {
        "--rank": args.rank,
        "--alpha": args.alpha,
        "--target-modules": args.target_modules,
        "--variant": args.variant,
        "--lora-seed": args.lora_seed,
    }
    if args.lora_config is not None:
        given = [name for name, value in flags.items() if value is not None]
        if given:
            raise ConfigError(
                f"give the adapter either with --lora-config or with flags, not both "
                f"({', '.join(given)} next to --lora-config {args.lora_config})"
            )
        return settings_from_file(args.lora_config)
    return settings_from_flags(
        args.rank, args.alpha, args.target_modules, args.variant, args.lora_seed
    )


def run(args: argparse.Namespace) -> int:
    """Run the attacks and write the reports; the exit status is in the module docstring."""
    try:
        for name in ("max_length", "top"):
            value = getattr(args, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if args.out.exists() and not args.out.is_dir():
            raise ConfigError(f"--out {args.out} exists and is not a directory")
        from fedveil.attacks.own.job import attack_files  # torch: only here
        from fedveil.attacks.own.lora_source import AdapterSource
        from fedveil.attacks.own.report import write_json
        from fedveil.attacks.own.report_text import write_text_reports

        source = _source(args)
        assert isinstance(source, AdapterSource)
        report = attack_files(
            args.model_dir,
            args.delta,
            source,
            args.records,
            views=args.views,
            max_length=args.max_length,
            top=args.top,
        )
        args.out.mkdir(parents=True, exist_ok=True)
        write_json(report, args.out / "report.json")
        write_text_reports(report, args.out)
    except (FedveilError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in report.recovered_records:
        print(f"RECOVERED {line}")
    print(
        f"wrote {args.out / 'report.json'}, report.md and report.html: "
        f"{len(report.recovered_records)} record(s) recovered over {len(report.views)} view(s)"
    )
    return 1 if args.fail_on_leak and not report.passed else 0


COMMAND = Command("attack", add_parser, run)
