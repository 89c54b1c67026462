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

from fedveil.errors import ConfigError
from fedveil.secagg.crypto.identity import VerifyingIdentity
from fedveil.secagg.roster_format import RosterEntry, parse_roster, roster_sha256

__all__ = [
    "RosterEntry",
    "load_roster_entries",
    "load_roster_identities",
    "parse_roster",
    "roster_sha256",
]


def load_roster_entries(
    path: str | os.PathLike[str], expected_sha256: bytes | None = None
) -> dict[str, RosterEntry]:
    """Read and validate roster.json (as written by `fedveil keys`).

    `expected_sha256`: the roster fingerprint the operator gave out of band (`fedveil
    keys show`); a roster with another one (a client added, removed or re-keyed by
    whoever handed over the file, e.g. the server) is refused with ConfigError.
    """
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
    entries = parse_roster(data, source=str(path))
    if expected_sha256 is not None:
        actual = roster_sha256(entries.values())
        if actual != expected_sha256:
            raise ConfigError(
                f"the roster {path} has SHA-256 {actual.hex()}, not the "
                f"{expected_sha256.hex()} the operator gave: refusing it (get the roster "
                "again and compare with `fedveil keys show` on the operator's side)"
            )
    return entries


def load_roster_identities(
    path: str | os.PathLike[str], expected_sha256: bytes | None = None
) -> dict[str, VerifyingIdentity]:
    """client_id -> enrolled Ed25519 identity: what a ClientSession checks peers against."""
    return {
        cid: entry.identity for cid, entry in load_roster_entries(path, expected_sha256).items()
    }
