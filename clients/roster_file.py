"""Read the federation's roster.json on the client side: who is enrolled, under which key.

Why clients read it themselves: a peer's signed key advertisement is checked against the
identity that peer enrolled with, never against anything the server relays during a
round, so a client needs the roster the operator handed out. The format is parsed by
secagg.roster_format, shared with the server that writes the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from secagg.crypto.identity import VerifyingIdentity
from secagg.errors import ConfigError
from secagg.roster_format import RosterEntry, parse_roster

__all__ = ["RosterEntry", "load_roster_entries", "load_roster_identities", "parse_roster"]


def load_roster_entries(path: str | os.PathLike[str]) -> dict[str, RosterEntry]:
    """Read and validate roster.json (as written by `fedveil keys`)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(
            f"no roster at {path}; the operator writes it with `fedveil keys init` and hands "
            "it to every client"
        ) from exc
    except (IsADirectoryError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the roster {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    return parse_roster(data, source=str(path))


def load_roster_identities(path: str | os.PathLike[str]) -> dict[str, VerifyingIdentity]:
    """client_id -> enrolled Ed25519 identity: what a ClientSession checks peers against."""
    return {cid: entry.identity for cid, entry in load_roster_entries(path).items()}
