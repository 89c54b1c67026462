"""One module per `fedveil` command; fedveil/cli.py dispatches through their `COMMAND`.

Each module defines `add_parser(sub)` (registers its sub-command) and `run(args)` (the
exit status), and exposes both as `COMMAND`. Commands that need torch import it inside
`run`, so `fedveil server`, `client` and `keys` start without the training stack.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    SubParsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
else:  # not subscriptable at run time before Python 3.12
    SubParsers = argparse._SubParsersAction


@dataclass(frozen=True)
class Command:
    """One row of the CLI's dispatch table."""

    name: str
    add_parser: Callable[[SubParsers], object]
    run: Callable[[argparse.Namespace], int]
