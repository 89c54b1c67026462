"""The round journal: every accepted client message and stage close, in SQLite (WAL).

Why event sourcing: a ServerRound is deterministic given the sequence of messages it
accepted, so the journal needs no bespoke snapshot of masks, sets and sums. A server
killed mid-round replays its open round's events into a fresh ServerRound and carries on
from the same stage; each event is written in the same transaction as the data it refers
to, so an update is never lost after it was acknowledged nor counted twice on replay.
Masked-input chunks live in their own table (they are megabytes) until the round ends.
Payloads are protobuf bytes of the fedveil.v1 messages: nothing is ever unpickled.

Every published result is kept too (its ResultHeader and download pieces), unlike the
events: a party that missed a round must be able to fetch that round's result later,
also after the round left memory or the server restarted (server.stored_results).
Tables are only ever added (CREATE TABLE IF NOT EXISTS), so an older journal still opens.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedveil.errors import ConfigError
from fedveil.secagg.ckks.messages import EpochKeys

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
    """CREATE TABLE IF NOT EXISTS result_digests (
        round_id INTEGER PRIMARY KEY,
        digest BLOB NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS results (
        round_id INTEGER PRIMARY KEY,
        header BLOB NOT NULL,
        sha256 BLOB NOT NULL,
        piece_count INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS result_pieces (
        round_id INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (round_id, idx)
    )""",
    """CREATE TABLE IF NOT EXISTS ckks_epochs (
        key_epoch INTEGER PRIMARY KEY,
        fingerprint BLOB NOT NULL,
        public_context BLOB NOT NULL,
        members TEXT NOT NULL,
        key_round INTEGER NOT NULL
    )""",
)


def _tighten(path: Path, mode: int) -> None:
    """Take group and other permissions off an existing path of ours (or say why not)."""
    current = stat.S_IMODE(path.stat().st_mode)
    if current & 0o077:
        try:
            path.chmod(mode)
        except OSError as exc:
            raise ConfigError(
                f"{path} is open to other users (mode {current:04o}) and cannot be made "
                f"private ({exc.strerror}): give the server a state folder of its own"
            ) from exc


def _private_files(path: Path) -> None:
    """The journal's folder 0700 and its files 0600, whatever the umask.

    The journal holds what clients sent (masked uploads, encrypted shares, signatures) and,
    with central DP, the seed of the server's noise: no other local user may read it.
    SQLite creates the -wal and -shm files with the main file's permissions.
    """
    folder = path.parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    _tighten(folder, 0o700)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if file.exists():
            _tighten(file, 0o600)


@dataclass(frozen=True)
class JournalEvent:
    kind: str
    client_id: str
    payload: bytes


@dataclass(frozen=True)
class StoredResult:
    """A published result as GetResult streams it: the serialised ResultHeader, the
    SHA-256 of the concatenated pieces and how many pieces there are (read them with
    RoundJournal.result_pieces)."""

    round_id: int
    header: bytes
    sha256: bytes
    piece_count: int


@dataclass(frozen=True)
class OpenRound:
    round_id: int
    spec: bytes
    events: tuple[JournalEvent, ...]


class RoundJournal:
    """Append-only log of rounds and their events, plus the chunks of uploads."""

    def __init__(self, path: Path | str) -> None:
        # One connection shared by the event loop and worker threads (a round's end runs in
        # a thread): every statement, and every transaction as a whole, holds this lock, so
        # statements never interleave inside another thread's transaction and close() waits
        # for work in flight instead of pulling the connection from under it.
        self._lock = threading.RLock()
        _private_files(Path(path))
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA:
            self._db.execute(statement)

    # --- rounds -------------------------------------------------------------------------

    def begin_round(self, round_id: int, spec: bytes) -> None:
        self._rows("INSERT INTO rounds VALUES (?, ?, 'open', '')", (round_id, spec))

    def end_round(self, round_id: int, status: str, reason: str = "") -> None:
        """Mark a round done or failed and drop its bulky data."""
        with self._transaction():
            self._rows(
                "UPDATE rounds SET status = ?, reason = ? WHERE round_id = ?",
                (status, reason, round_id),
            )
            self._rows("DELETE FROM upload_chunks WHERE round_id = ?", (round_id,))
            self._rows("DELETE FROM events WHERE round_id = ?", (round_id,))

    def last_round_id(self) -> int:
        rows = self._rows("SELECT MAX(round_id) FROM rounds")
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    def round_specs(self, status: str) -> list[bytes]:
        """The published specs of every round with this status, oldest first."""
        rows = self._rows("SELECT spec FROM rounds WHERE status = ? ORDER BY round_id", (status,))
        return [bytes(spec) for (spec,) in rows]

    def round_status(self, round_id: int) -> tuple[str, str] | None:
        rows = self._rows("SELECT status, reason FROM rounds WHERE round_id = ?", (round_id,))
        return (rows[0][0], rows[0][1]) if rows else None

    def open_rounds(self) -> list[OpenRound]:
        rounds = []
        for round_id, spec in self._rows(
            "SELECT round_id, spec FROM rounds WHERE status = 'open' ORDER BY round_id"
        ):
            events = tuple(
                JournalEvent(kind, client_id, bytes(payload))
                for kind, client_id, payload in self._rows(
                    "SELECT kind, client_id, payload FROM events WHERE round_id = ? ORDER BY seq",
                    (round_id,),
                )
            )
            rounds.append(OpenRound(int(round_id), bytes(spec), events))
        return rounds

    def record_result_digest(self, round_id: int, digest: bytes) -> None:
        """Keep the digest of a published result: the next round's model hash chains it
        (secagg.protocol.model_chain), also after a restart."""
        self._rows("INSERT OR REPLACE INTO result_digests VALUES (?, ?)", (round_id, digest))

    def last_result_digest(self) -> tuple[int, bytes] | None:
        """(round id, digest) of the latest published result, None before the first."""
        rows = self._rows(
            "SELECT round_id, digest FROM result_digests ORDER BY round_id DESC LIMIT 1"
        )
        return (int(rows[0][0]), bytes(rows[0][1])) if rows else None

    # --- published results ---------------------------------------------------------------

    def save_result(
        self, round_id: int, header: bytes, pieces: Sequence[bytes], sha256: bytes
    ) -> bool:
        """Keep a published result durably, header and pieces in one transaction.

        The first copy wins (False when one was already kept): a round re-published after
        a restart must go on serving exactly what its survivors downloaded before it.
        """
        with self._transaction():
            if self._rows("SELECT 1 FROM results WHERE round_id = ?", (round_id,)):
                return False
            self._rows(
                "INSERT INTO results VALUES (?, ?, ?, ?)",
                (round_id, header, sha256, len(pieces)),
            )
            for index, piece in enumerate(pieces):
                self._rows("INSERT INTO result_pieces VALUES (?, ?, ?)", (round_id, index, piece))
        return True

    def result(self, round_id: int) -> StoredResult | None:
        """The kept result of a round (header and digest; not its pieces), or None."""
        rows = self._rows(
            "SELECT header, sha256, piece_count FROM results WHERE round_id = ?", (round_id,)
        )
        if not rows:
            return None
        header, sha256, count = rows[0]
        return StoredResult(round_id, bytes(header), bytes(sha256), int(count))

    def result_pieces(self, round_id: int) -> Iterator[bytes]:
        """The kept result's pieces in order, one read per piece (a mean can be 32 MB)."""
        count = self.result(round_id)
        for index in range(count.piece_count if count is not None else 0):
            rows = self._rows(
                "SELECT data FROM result_pieces WHERE round_id = ? AND idx = ?",
                (round_id, index),
            )
            if not rows:
                raise KeyError(f"piece {index} of the result of round {round_id} is missing")
            yield bytes(rows[0][0])

    # --- events -------------------------------------------------------------------------

    def record(self, round_id: int, kind: str, client_id: str = "", payload: bytes = b"") -> None:
        self._rows(
            "INSERT INTO events (round_id, kind, client_id, payload) VALUES (?, ?, ?, ?)",
            (round_id, kind, client_id, payload),
        )

    def record_chunk(self, round_id: int, client_id: str, index: int, data: bytes) -> None:
        """Store a chunk and its event atomically: replay sees both or neither."""
        with self._transaction():
            self._rows(
                "INSERT OR REPLACE INTO upload_chunks VALUES (?, ?, ?, ?)",
                (round_id, client_id, index, data),
            )
            self.record(round_id, "chunk", client_id, str(index).encode())

    def chunk(self, round_id: int, client_id: str, index: int) -> bytes:
        rows = self._rows(
            "SELECT data FROM upload_chunks WHERE round_id = ? AND client_id = ? AND idx = ?",
            (round_id, client_id, index),
        )
        if not rows:
            raise KeyError(f"chunk {index} of {client_id!r} in round {round_id} is missing")
        return bytes(rows[0][0])

    def chunks(self, round_id: int, client_id: str) -> Iterator[bytes]:
        rows = self._rows(
            "SELECT data FROM upload_chunks WHERE round_id = ? AND client_id = ? ORDER BY idx",
            (round_id, client_id),
        )
        for (data,) in rows:
            yield bytes(data)

    def forget_upload(self, round_id: int, client_id: str) -> None:
        """Erase a rolled-back upload: its chunks and their events, atomically.

        The running sum no longer holds it, so replay must not see it either; a re-sent
        upload is then journalled afresh.
        """
        with self._transaction():
            self._rows(
                "DELETE FROM upload_chunks WHERE round_id = ? AND client_id = ?",
                (round_id, client_id),
            )
            self._rows(
                "DELETE FROM events WHERE round_id = ? AND client_id = ? "
                "AND kind IN ('chunk', 'plain-begin', 'ckks-begin', 'finish')",
                (round_id, client_id),
            )

    # --- ckks key epochs (public material only) ------------------------------------------

    def save_epoch_keys(self, keys: EpochKeys) -> None:
        """Keep an epoch's public context across rounds and restarts."""
        self._rows(
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
        rows = self._rows(
            "SELECT fingerprint, public_context, members, key_round FROM ckks_epochs "
            "WHERE key_epoch = ?",
            (key_epoch,),
        )
        if not rows:
            return None
        fingerprint, public_context, members, key_round = rows[0]
        return EpochKeys(
            key_epoch=key_epoch,
            fingerprint=bytes(fingerprint),
            public_context=bytes(public_context),
            members=frozenset(json.loads(members)),
            key_round=int(key_round),
        )

    def _rows(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement and fetch its rows, all under the lock."""
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()
