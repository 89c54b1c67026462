"""The roster document format, read by both the server and the clients.

Why here: the server (which writes and enforces the roster) and the clients (which check
peers' signed advertisements against it) must parse the same file identically, and the
dependency rule lets both import secagg but not each other. This module only validates a
decoded JSON document; reading and writing files stays with each side::

    {"version": 1, "clients": [{"client_id": "...", "identity_public_key": "<hex>",
                                "certificate_sha256": "<hex>"}]}

Every wrong field is named with its position, so an operator can fix the file by hand.

`roster_sha256` is the roster's fingerprint, handed to every client out of band (`fedveil
keys show` prints it, `fedveil client --roster-sha256` checks it): it covers the parsed
entries in a canonical form, so re-indenting the file does not change it but adding,
removing or re-keying a client does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fedveil.errors import ConfigError
from fedveil.secagg.crypto.identity import PUBLIC_KEY_BYTES, VerifyingIdentity

ROSTER_VERSION = 1
FINGERPRINT_BYTES = 32
_ENTRY_KEYS = frozenset({"client_id", "identity_public_key", "certificate_sha256"})


@dataclass(frozen=True)
class RosterEntry:
    """One enrolled client as the roster document lists it."""

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


def _entry(entry: object, where: str) -> RosterEntry:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be an object")
    keys = set(entry)
    if keys != _ENTRY_KEYS:
        missing, extra = sorted(_ENTRY_KEYS - keys), sorted(keys - _ENTRY_KEYS)
        raise ConfigError(f"{where}: missing fields {missing}, unknown fields {extra}")
    client_id = entry["client_id"]
    if not isinstance(client_id, str):
        raise ConfigError(f"{where}: client_id must be a string, got {client_id!r}")
    if not client_id or client_id != client_id.strip():
        raise ConfigError(f"{where}: client_id must be non-empty, without surrounding spaces")
    where = f"{where} ({client_id!r})"
    identity = VerifyingIdentity(_hex_field(entry, "identity_public_key", PUBLIC_KEY_BYTES, where))
    fingerprint = _hex_field(entry, "certificate_sha256", FINGERPRINT_BYTES, where)
    return RosterEntry(client_id, identity, fingerprint)


def parse_roster(data: object, source: str = "roster") -> dict[str, RosterEntry]:
    """Validate a decoded roster document; entries keyed by client id, in file order."""
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
        entry = _entry(raw, f"{source}: clients[{index}]")
        if entry.client_id in roster:
            raise ConfigError(
                f"{source}: clients[{index}]: client id {entry.client_id!r} appears twice"
            )
        roster[entry.client_id] = entry
    return roster


def roster_document(entries: Iterable[RosterEntry]) -> dict[str, Any]:
    """The JSON-ready document for `entries` (sorted by client id)."""
    return {
        "version": ROSTER_VERSION,
        "clients": [
            {
                "client_id": e.client_id,
                "identity_public_key": e.identity.public_bytes.hex(),
                "certificate_sha256": e.certificate_sha256.hex(),
            }
            for e in sorted(entries, key=lambda e: e.client_id)
        ],
    }


def roster_sha256(entries: Iterable[RosterEntry]) -> bytes:
    """SHA-256 over the canonical JSON of `entries` (sorted by id, no whitespace)."""
    canonical = json.dumps(roster_document(entries), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).digest()
