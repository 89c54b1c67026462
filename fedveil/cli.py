"""The `fedveil` command line: the entry point that wires the packages together."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import NoReturn, cast

from fedveil.commands import (
    Command,
    SubParsers,
    attack,
    audit,
    client,
    contributions,
    demo,
    keys,
    model_hash,
    plan,
    server,
    simulate,
    simulate_secagg,
    status,
    train,
)

COMMANDS: tuple[Command, ...] = (
    simulate_secagg.COMMAND,
    simulate.COMMAND,
    keys.COMMAND,
    server.COMMAND,
    status.COMMAND,
    client.COMMAND,
    demo.COMMAND,
    audit.COMMAND,
    model_hash.COMMAND,
    train.COMMAND,
    plan.COMMAND,
    attack.COMMAND,
    contributions.COMMAND,
)
"""The dispatch table: `fedveil NAME` runs the row whose name is NAME."""


class OneLineErrorParser(argparse.ArgumentParser):
    """A bad flag is one line on stderr (what is wrong, where the options are), exit 2:
    not the usage block, which for `fedveil server` runs to a screenful."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def fedveil_version() -> str:
    """The installed distribution's version (importlib.metadata), or "unknown" when run
    from a tree that was never installed."""
    try:
        return version("fedveil")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="fedveil", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fedveil {fedveil_version()}")
    sub = cast(
        SubParsers,
        parser.add_subparsers(dest="command", required=True, parser_class=OneLineErrorParser),
    )
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for command in COMMANDS:
        if command.name == args.command:
            return command.run(args)
    parser.error(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
