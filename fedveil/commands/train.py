"""`fedveil train --config party.toml`: one organisation's party of a federation.

Why a command: an organisation joins a federation with its own machine, its own base
model copy and its own data, and must not write the training loop, the adapter
bookkeeping or the aggregation glue itself. Each round it trains LoRA locally from the
global adapter, checks the round the service announces (the adapter's dimension, the
model hash chained from its own base model), sends the adapter delta through the secure
service, applies the aggregate and checkpoints (adapter, round, model chain) atomically
in OUT/checkpoint.safetensors. At the end it writes OUT/adapter with `save_pretrained`,
so `PeftModel.from_pretrained(base, OUT/adapter)` loads it.

Re-running the same command after a crash resumes after the last round in the
checkpoint; a checkpoint written with other settings (base model, adapter, data, recipe,
client) is refused. party.toml is described in commands.party_settings; --server,
--credentials, --rounds and --out override its [party] table.

`--alone` trains the same rounds on this party's data only, without the service
(commands.train_alone): the baseline a party compares the federation with.

With a [dp] table the party trains with DP-SGD (kind "sample") or charges the service's
client-level DP rounds (kind "client") against a budget kept in a ledger file that a
restart does not reset (commands.party_settings).

Exit status: 0 when every round was applied and the adapter saved; 1 when rounds failed
more than party.max_failed_rounds times, the service refused, or this party refused the
round (a mode it does not allow, a round past its privacy budget or without the DP noise
it requires); 2 for bad arguments, settings, model or data (a malformed JSONL line is
named with its number; another base model or adapter than the federation plan's; a
privacy ledger of another federation, or one that holds less than the checkpoint says).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from fedveil.commands import Command, SubParsers
from fedveil.commands.logs import add_logging_flags, configure_logging
from fedveil.commands.party_settings import PARTY_FLAGS, load_party_settings
from fedveil.errors import FedveilError

Prepared = TypeVar("Prepared")


def add_parser(sub: SubParsers) -> argparse.ArgumentParser:
    """Register `train`; dispatched by `run`."""
    p = sub.add_parser(
        "train",
        help="take part in a federation: train LoRA locally, aggregate securely, each round",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--config", type=Path, required=True, help="party.toml ([party], [data], ...)")
    p.add_argument("--server", default=None, help="HOST:PORT of the aggregation service")
    p.add_argument("--credentials", type=Path, default=None, help="this party's enrolment folder")
    p.add_argument("--rounds", type=int, default=None, help="rounds in all (resumes count)")
    p.add_argument("--out", type=Path, default=None, help="checkpoint and adapter folder")
    p.add_argument(
        "--alone",
        action="store_true",
        help="train the same rounds locally, without the service (the party's own baseline; "
        "no credentials or network used): OUT/metrics.jsonl and OUT/adapter",
    )
    add_logging_flags(p, default_level=None)  # None: [party] log_level
    return p


def run(args: argparse.Namespace) -> int:
    """Run `fedveil train`; the exit status is documented in the module docstring."""
    overrides = {name: getattr(args, name, None) for name in PARTY_FLAGS}
    try:
        settings = load_party_settings(args.config, overrides)
        configure_logging(settings.party.log_level, settings.party.log_format)
    except (FedveilError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "alone", False):
        from fedveil.commands.train_alone import prepare_alone, run_alone  # torch: only here

        return _execute(
            lambda: prepare_alone(settings),
            run_alone,
            "an alone run starts afresh when re-run",
        )
    from fedveil.commands.train_rounds import prepare, run_rounds  # torch: only here

    return _execute(lambda: prepare(settings), run_rounds, "re-run the same command to resume")


def _execute(
    prepare: Callable[[], Prepared], rounds: Callable[[Prepared], object], resume: str
) -> int:
    """Exit 2 when preparing fails (settings, model, data), 1 when a round does, 130 on
    Ctrl-C; one `error:` line each, never a traceback."""
    try:
        prepared = prepare()
    except (FedveilError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        rounds(prepared)
    except (FedveilError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"error: interrupted ({resume})", file=sys.stderr)
        return 130
    finally:
        close = getattr(prepared, "close", None)
        if close is not None:
            close()
    return 0


COMMAND = Command("train", add_parser, run)
