"""Chunks of uploads in flight, kept on disk in SQLite (WAL), not in memory.

Why: the running sum absorbs each chunk as it arrives, so an upload that breaks off must
be subtracted again, which needs its chunks. Holding them in RAM would cost O(d) per
concurrent upload (O(n d) at worst); on disk the server stays at O(d + n k) memory.
Chunks are deleted as soon as their upload completes or is rolled back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS upload_chunks (
    round_id INTEGER NOT NULL,
    client_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (round_id, client_id, idx)
)
"""


class ChunkStore:
    """A small SQLite table of (round, client, index) -> chunk bytes."""

    def __init__(self, path: Path | str) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def put(self, round_id: int, client_id: str, index: int, data: bytes) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO upload_chunks VALUES (?, ?, ?, ?)",
            (round_id, client_id, index, data),
        )

    def chunks(self, round_id: int, client_id: str) -> Iterator[bytes]:
        rows = self._db.execute(
            "SELECT data FROM upload_chunks WHERE round_id = ? AND client_id = ? ORDER BY idx",
            (round_id, client_id),
        )
        for (data,) in rows:
            yield bytes(data)

    def discard(self, round_id: int, client_id: str) -> None:
        self._db.execute(
            "DELETE FROM upload_chunks WHERE round_id = ? AND client_id = ?", (round_id, client_id)
        )

    def discard_round(self, round_id: int) -> None:
        self._db.execute("DELETE FROM upload_chunks WHERE round_id = ?", (round_id,))

    def close(self) -> None:
        self._db.close()
