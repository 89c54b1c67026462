"""The round journal: every accepted client message and stage close, in SQLite (WAL).

Why event sourcing: a ServerRound is deterministic given the sequence of messages it
accepted, so the journal needs no bespoke snapshot of masks, sets and sums. A server
killed mid-round replays its open round's events into a fresh ServerRound and carries on
from the same stage; each event is written in the same transaction as the data it refers
to, so an update is never lost after it was acknowledged nor counted twice on replay.
Masked-input chunks live in their own table (they are megabytes) until the round ends.
Payloads are protobuf bytes of the fedveil.v1 messages: nothing is ever unpickled.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from secagg.ckks.messages import EpochKeys

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS rounds (
        round_id INTEGER PRIMARY KEY,
        spec BLOB NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('open', 'done', 'failed')),
        reason TEXT NOT NULL DEFAULT ''
    )""",
    """CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        round_id INTEGER NOT NULL,
        kind TEXT NOT NULL,
        client_id TEXT NOT NULL,
        payload BLOB NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS upload_chunks (
        round_id INTEGER NOT NULL,
        client_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (round_id, client_id, idx)
    )""",
    """CREATE TABLE IF NOT EXISTS ckks_epochs (
        key_epoch INTEGER PRIMARY KEY,
        fingerprint BLOB NOT NULL,
        public_context BLOB NOT NULL,
        members TEXT NOT NULL,
        key_round INTEGER NOT NULL
    )""",
)


@dataclass(frozen=True)
class JournalEvent:
    kind: str
    client_id: str
    payload: bytes


@dataclass(frozen=True)
class OpenRound:
    round_id: int
    spec: bytes
    events: tuple[JournalEvent, ...]


class RoundJournal:
    """Append-only log of rounds and their events, plus the chunks of uploads."""

    def __init__(self, path: Path | str) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA:
            self._db.execute(statement)

    # --- rounds -------------------------------------------------------------------------

    def begin_round(self, round_id: int, spec: bytes) -> None:
        self._db.execute("INSERT INTO rounds VALUES (?, ?, 'open', '')", (round_id, spec))

    def end_round(self, round_id: int, status: str, reason: str = "") -> None:
        """Mark a round done or failed and drop its bulky data."""
        with self._transaction():
            self._db.execute(
                "UPDATE rounds SET status = ?, reason = ? WHERE round_id = ?",
                (status, reason, round_id),
            )
            self._db.execute("DELETE FROM upload_chunks WHERE round_id = ?", (round_id,))
            self._db.execute("DELETE FROM events WHERE round_id = ?", (round_id,))

    def last_round_id(self) -> int:
        row = self._db.execute("SELECT MAX(round_id) FROM rounds").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def round_status(self, round_id: int) -> tuple[str, str] | None:
        row = self._db.execute(
            "SELECT status, reason FROM rounds WHERE round_id = ?", (round_id,)
        ).fetchone()
        return (row[0], row[1]) if row else None

    def open_rounds(self) -> list[OpenRound]:
        rounds = []
        for round_id, spec in self._db.execute(
            "SELECT round_id, spec FROM rounds WHERE status = 'open' ORDER BY round_id"
        ).fetchall():
            events = tuple(
                JournalEvent(kind, client_id, bytes(payload))
                for kind, client_id, payload in self._db.execute(
                    "SELECT kind, client_id, payload FROM events WHERE round_id = ? ORDER BY seq",
                    (round_id,),
                )
            )
            rounds.append(OpenRound(int(round_id), bytes(spec), events))
        return rounds

    # --- events -------------------------------------------------------------------------

    def record(self, round_id: int, kind: str, client_id: str = "", payload: bytes = b"") -> None:
        self._db.execute(
            "INSERT INTO events (round_id, kind, client_id, payload) VALUES (?, ?, ?, ?)",
            (round_id, kind, client_id, payload),
        )

    def record_chunk(self, round_id: int, client_id: str, index: int, data: bytes) -> None:
        """Store a chunk and its event atomically: replay sees both or neither."""
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO upload_chunks VALUES (?, ?, ?, ?)",
                (round_id, client_id, index, data),
            )
            self.record(round_id, "chunk", client_id, str(index).encode())

    def chunk(self, round_id: int, client_id: str, index: int) -> bytes:
        row = self._db.execute(
            "SELECT data FROM upload_chunks WHERE round_id = ? AND client_id = ? AND idx = ?",
            (round_id, client_id, index),
        ).fetchone()
        if row is None:
            raise KeyError(f"chunk {index} of {client_id!r} in round {round_id} is missing")
        return bytes(row[0])

    def chunks(self, round_id: int, client_id: str) -> Iterator[bytes]:
        rows = self._db.execute(
            "SELECT data FROM upload_chunks WHERE round_id = ? AND client_id = ? ORDER BY idx",
            (round_id, client_id),
        )
        for (data,) in rows.fetchall():
            yield bytes(data)

    def forget_upload(self, round_id: int, client_id: str) -> None:
        """Erase a rolled-back upload: its chunks and their events, atomically.

        The running sum no longer holds it, so replay must not see it either; a re-sent
        upload is then journalled afresh.
        """
        with self._transaction():
            self._db.execute(
                "DELETE FROM upload_chunks WHERE round_id = ? AND client_id = ?",
                (round_id, client_id),
            )
            self._db.execute(
                "DELETE FROM events WHERE round_id = ? AND client_id = ? "
                "AND kind IN ('chunk', 'plain-begin', 'ckks-begin', 'finish')",
                (round_id, client_id),
            )

    # --- ckks key epochs (public material only) ------------------------------------------

    def save_epoch_keys(self, keys: EpochKeys) -> None:
        """Keep an epoch's public context across rounds and restarts."""
        self._db.execute(
            "INSERT OR REPLACE INTO ckks_epochs VALUES (?, ?, ?, ?, ?)",
            (
                keys.key_epoch,
                keys.fingerprint,
                keys.public_context,
                json.dumps(sorted(keys.members)),
                keys.key_round,
            ),
        )

    def epoch_keys(self, key_epoch: int) -> EpochKeys | None:
        row = self._db.execute(
            "SELECT fingerprint, public_context, members, key_round FROM ckks_epochs "
            "WHERE key_epoch = ?",
            (key_epoch,),
        ).fetchone()
        if row is None:
            return None
        fingerprint, public_context, members, key_round = row
        return EpochKeys(
            key_epoch=key_epoch,
            fingerprint=bytes(fingerprint),
            public_context=bytes(public_context),
            members=frozenset(json.loads(members)),
            key_round=int(key_round),
        )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def close(self) -> None:
        self._db.close()


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
