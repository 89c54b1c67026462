"""The round journal: every accepted client message and stage close, in SQLite (WAL).

Why event sourcing: a ServerRound is deterministic given the sequence of messages it
accepted, so the journal needs no bespoke snapshot of masks, sets and sums. A server
killed mid-round replays its open round's events into a fresh ServerRound and carries on
from the same stage; each event is written in the same transaction as the data it refers
to, so an update is never lost after it was acknowledged nor counted twice on replay.
Masked-input chunks live in their own table (they are megabytes) until the round ends.
Payloads are protobuf bytes of the fedveil.v1 messages: nothing is ever unpickled.

Why the chunks of an ended round are purged in the background, not in `end_round`: the
coordinator ends a round under its lock, so every reply of the round's last stage waited
for the delete, and deleting is as dear as writing (this SQLite zeroes freed pages,
secure_delete); no restart needs the chunks of a round that is no longer open, so
`end_round` commits the round's status with its events gone and a journal thread deletes
the chunks a few rows per transaction (other writes get in between). A crash before it
finished leaves chunks of a closed round, which replay never reads and the next start
purges. Why 64 KiB pages: a megabyte chunk is written (and zeroed) in 16 WAL frames
rather than 256; an existing journal keeps the page size it was created with. Why the
same thread checkpoints the WAL, on a connection of its own: SQLite's automatic
checkpoint runs inside whichever commit crosses its threshold, so it stalled an upload
chunk's write on the event loop or the result's write at a round's close; a checkpoint
only moves committed pages from the WAL into the database file, so when it runs changes
nothing a restart reads. The price: while uploads keep arriving during a checkpoint the
WAL cannot start over, so it can grow to about one round's uploads until the round ends.

Every published result is kept too (its ResultHeader and download pieces), unlike the
events: a party that missed a round must be able to fetch that round's result later,
also after the round left memory or the server restarted (server.stored_results).
Tables are only ever added (CREATE TABLE IF NOT EXISTS), so an older journal still opens.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from fedveil.errors import ConfigError
from fedveil.secagg.ckks.messages import EpochKeys

log = logging.getLogger(__name__)

PAGE_BYTES = 65536
CHECKPOINT_BYTES = 64 << 20
"""Bytes committed to the WAL after which the journal thread checkpoints it (and after
every purged round), which also bounds the WAL file's size."""
PURGE_BATCH_ROWS = 4
"""Upload chunks deleted per purge transaction: a few megabytes, so a journal write from
the event loop never waits long behind the purger."""

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
        self._db.execute(f"PRAGMA page_size={PAGE_BYTES}")  # takes effect on a new file only
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA wal_autocheckpoint=0")  # the journal thread checkpoints
        for statement in _SCHEMA:
            self._db.execute(statement)
        self._path = str(path)
        self._purge = _JournalThread(self._purge_some, self._checkpoint)
        # Chunks a crash left behind: of rounds that are no longer open (never replayed).
        self._purge.add(
            int(round_id)
            for (round_id,) in self._rows(
                "SELECT DISTINCT round_id FROM upload_chunks WHERE round_id NOT IN "
                "(SELECT round_id FROM rounds WHERE status = 'open')"
            )
        )

    # --- rounds -------------------------------------------------------------------------

    def begin_round(self, round_id: int, spec: bytes) -> None:
        self._rows("INSERT INTO rounds VALUES (?, ?, 'open', '')", (round_id, spec))

    def end_round(self, round_id: int, status: str, reason: str = "") -> None:
        """Mark a round done or failed and drop its events; its upload chunks are purged
        in the background (`wait_for_purge`), since nothing reads a closed round's."""
        with self._transaction():
            self._rows(
                "UPDATE rounds SET status = ?, reason = ? WHERE round_id = ?",
                (status, reason, round_id),
            )
            self._rows("DELETE FROM events WHERE round_id = ?", (round_id,))
        self._purge.add([round_id])

    def wait_for_purge(self, timeout_s: float | None = None) -> bool:
        """Wait until the upload chunks of every ended round are deleted; False on timeout."""
        return self._purge.wait(timeout_s)

    def _checkpoint(self) -> None:
        """Copy the WAL's committed pages into the database file (journal thread only:
        on a connection of its own, so writers on the main connection go on meanwhile)."""
        db = sqlite3.connect(self._path, isolation_level=None, timeout=60)
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            db.close()

    def _purge_some(self, round_id: int) -> bool:
        """Delete a few of a closed round's upload chunks; True once none are left."""
        with self._transaction():
            deleted = self._db.execute(
                "DELETE FROM upload_chunks WHERE rowid IN (SELECT rowid FROM upload_chunks "
                "WHERE round_id = ? LIMIT ?)",
                (round_id, PURGE_BATCH_ROWS),
            ).rowcount
        return deleted < PURGE_BATCH_ROWS

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
        self._purge.wrote(sum(len(piece) for piece in pieces))
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
        self._purge.wrote(len(data))

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
        """Stop the purger after its current batch (what is left is purged at the next
        start), then close the connection once work in flight is done."""
        self._purge.stop()
        with self._lock:
            self._db.close()


class _JournalThread:
    """The journal's background thread: it deletes closed rounds' upload chunks, batch by
    batch, and checkpoints the WAL every CHECKPOINT_BYTES written and after each purge.

    Started on first use; `purge_some(round_id)` deletes one batch and says whether the
    round is clean. A failure is logged and leaves the rest to the next start's purge (or
    to the next checkpoint).
    """

    def __init__(self, purge_some: Callable[[int], bool], checkpoint: Callable[[], None]) -> None:
        self._purge_some = purge_some
        self._checkpoint = checkpoint
        self._pending: list[int] = []
        self._unsaved = 0
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def add(self, round_ids: Iterable[int]) -> None:
        with self._changed:
            fresh = [r for r in round_ids if r not in self._pending]
            if not fresh or self._stopping:
                return
            self._pending.extend(fresh)
            self._wake()

    def wrote(self, nbytes: int) -> None:
        """`nbytes` more were committed; past CHECKPOINT_BYTES the thread checkpoints."""
        with self._changed:
            self._unsaved += nbytes
            if self._unsaved >= CHECKPOINT_BYTES and not self._stopping:
                self._wake()

    def _wake(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fedveil-journal", daemon=True)
            self._thread.start()
        self._changed.notify_all()

    def wait(self, timeout_s: float | None) -> bool:
        with self._changed:
            self._changed.wait_for(lambda: not self._pending or self._stopping, timeout_s)
            return not self._pending

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(
                    lambda: self._pending or self._unsaved >= CHECKPOINT_BYTES or self._stopping
                )
                if self._stopping:
                    return
                round_id = self._pending[0] if self._pending else None
                if round_id is None:
                    self._unsaved = 0
            if round_id is None:
                self._guarded(self._checkpoint, "checkpointing the WAL")
                continue
            clean = self._guarded(partial(self._purge_some, round_id), "purging round chunks")
            if clean is not False:
                with self._changed:
                    self._pending.remove(round_id)
                    self._unsaved = 0
                    self._changed.notify_all()
                self._guarded(self._checkpoint, "checkpointing the WAL")

    @staticmethod
    def _guarded(work: Callable[[], object], what: str) -> object:
        try:
            return work()
        except Exception:  # noqa: BLE001 - the next start (or checkpoint) does what is left
            log.exception("journal: %s failed", what)
            return None
