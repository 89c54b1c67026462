"""Read the federation's roster.json on the client side: who is enrolled, under which key.

Why clients read it themselves: a peer's signed key advertisement is checked against the
identity that peer enrolled with, never against anything the server relays during a
round, so a client needs the roster the operator handed out. The writer lives in
server/roster.py, which clients may not import (dependency rule), so the format is read
again here, just as strictly::

    {"version": 1, "clients": [{"client_id": "...", "identity_public_key": "<hex>",
                                "certificate_sha256": "<hex>"}]}

Every wrong field is named with its position, so an operator can fix the file by hand.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from secagg.crypto.identity import PUBLIC_KEY_BYTES, VerifyingIdentity
from secagg.errors import ConfigError

ROSTER_VERSION = 1
FINGERPRINT_BYTES = 32
_ENTRY_KEYS = frozenset({"client_id", "identity_public_key", "certificate_sha256"})


@dataclass(frozen=True)
class RosterEntry:
    """One enrolled client as the roster file lists it."""

    client_id: str
    identity: VerifyingIdentity
    certificate_sha256: bytes


def _hex_field(entry: Mapping[str, object], key: str, size: int, where: str) -> bytes:
    value = entry[key]
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key} must be a hex string, got {type(value).__name__}")
    try:
        raw = bytes.fromhex(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {key} is not valid hex") from exc
    if len(raw) != size:
        raise ConfigError(f"{where}: {key} must be {size} bytes, got {len(raw)}")
    return raw


def _entry(entry: object, index: int, source: str) -> RosterEntry:
    where = f"{source}: clients[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a JSON object")
    keys = set(entry)
    if keys != _ENTRY_KEYS:
        missing, extra = sorted(_ENTRY_KEYS - keys), sorted(keys - _ENTRY_KEYS)
        raise ConfigError(f"{where}: missing fields {missing}, unknown fields {extra}")
    client_id = entry["client_id"]
    if not isinstance(client_id, str) or not client_id or client_id != client_id.strip():
        raise ConfigError(f"{where}: client_id must be a non-empty string, got {client_id!r}")
    where = f"{where} ({client_id!r})"
    identity = VerifyingIdentity(_hex_field(entry, "identity_public_key", PUBLIC_KEY_BYTES, where))
    fingerprint = _hex_field(entry, "certificate_sha256", FINGERPRINT_BYTES, where)
    return RosterEntry(client_id, identity, fingerprint)


def parse_roster(data: object, source: str = "roster") -> dict[str, RosterEntry]:
    """Validate a decoded roster document; entries keyed by client id."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a JSON object at the top level")
    version = data.get("version")
    if version != ROSTER_VERSION:
        raise ConfigError(
            f"{source}: unknown roster version {version!r}; this fedveil reads version "
            f"{ROSTER_VERSION}"
        )
    entries = data.get("clients")
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: 'clients' must be a list")
    roster: dict[str, RosterEntry] = {}
    for index, raw in enumerate(entries):
        entry = _entry(raw, index, source)
        if entry.client_id in roster:
            raise ConfigError(
                f"{source}: clients[{index}]: client id {entry.client_id!r} is listed twice"
            )
        roster[entry.client_id] = entry
    return roster


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
