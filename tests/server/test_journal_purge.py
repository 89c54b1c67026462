"""The journal purges an ended round's upload chunks in the background, and a restart
purges what a crash left behind; the round's status and events change at once."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

import fedveil.server.journal as journal_module
from fedveil.server.journal import PAGE_BYTES, PURGE_BATCH_ROWS, RoundJournal


def _chunk_rows(path: Path, round_id: int) -> int:
    with sqlite3.connect(path) as db:
        (count,) = db.execute(
            "SELECT COUNT(*) FROM upload_chunks WHERE round_id = ?", (round_id,)
        ).fetchone()
    return int(count)


def _fill(journal: RoundJournal, round_id: int, clients: int, chunks: int) -> None:
    journal.begin_round(round_id, b"spec")
    for client in range(clients):
        for index in range(chunks):
            journal.record_chunk(round_id, f"c{client}", index, bytes([index]) * 1000)


def test_end_round_closes_at_once_and_the_chunks_are_purged_after(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    journal = RoundJournal(path)
    try:
        rows = 3 * PURGE_BATCH_ROWS + 1  # more than one batch, the last one short
        _fill(journal, 1, clients=rows, chunks=1)
        _fill(journal, 2, clients=2, chunks=2)
        journal.end_round(1, "done")
        assert journal.round_status(1) == ("done", "")
        assert journal.open_rounds()[0].round_id == 2  # round 1's events are gone with it
        assert journal.wait_for_purge(timeout_s=30)
        assert _chunk_rows(path, 1) == 0
        assert list(journal.chunks(2, "c1")) == [b"\x00" * 1000, b"\x01" * 1000]  # open round kept
    finally:
        journal.close()


def test_a_restart_purges_chunks_of_rounds_that_are_no_longer_open(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    journal = RoundJournal(path)
    _fill(journal, 1, clients=2, chunks=3)
    _fill(journal, 2, clients=1, chunks=2)
    journal.close()
    with sqlite3.connect(path) as db:  # what a crash between end_round and the purge leaves
        db.execute("UPDATE rounds SET status = 'failed' WHERE round_id = 1")
    reopened = RoundJournal(path)
    try:
        assert reopened.wait_for_purge(timeout_s=30)
        assert _chunk_rows(path, 1) == 0
        assert _chunk_rows(path, 2) == 2  # still open: replay needs it
    finally:
        reopened.close()


def test_close_does_not_wait_for_a_long_purge_and_the_next_start_finishes_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.sqlite3"
    journal = RoundJournal(path)
    _fill(journal, 1, clients=40, chunks=1)
    journal.end_round(1, "done")
    journal.close()  # stops after the batch in flight
    assert not journal.wait_for_purge(timeout_s=0) or _chunk_rows(path, 1) == 0
    reopened = RoundJournal(path)
    try:
        assert reopened.wait_for_purge(timeout_s=30)
        assert _chunk_rows(path, 1) == 0
    finally:
        reopened.close()


def test_a_new_journal_uses_large_pages(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    RoundJournal(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA page_size").fetchone() == (PAGE_BYTES,)


def test_the_journal_thread_checkpoints_the_wal_into_the_database_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's own checkpoint is off (it ran inside whichever commit crossed its
    threshold); past CHECKPOINT_BYTES the journal thread moves the pages instead."""
    monkeypatch.setattr(journal_module, "CHECKPOINT_BYTES", 10_000)
    path = tmp_path / "journal.sqlite3"
    journal = RoundJournal(path)
    try:
        empty = path.stat().st_size
        _fill(journal, 1, clients=1, chunks=20)  # 20 kB committed, in the WAL only
        deadline = time.monotonic() + 30
        while path.stat().st_size <= empty and time.monotonic() < deadline:
            time.sleep(0.01)
        assert path.stat().st_size > empty + 20_000
        assert [len(c) for c in journal.chunks(1, "c0")] == [1000] * 20
    finally:
        journal.close()
