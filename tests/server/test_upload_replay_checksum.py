"""A server restarted mid-round replays the journalled masked inputs against the checksums
their clients sent: the key comes from the journalled spec's session id, so an intact
journal replays, and a chunk damaged on disk fails the replay instead of a wrong sum."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from fedveil.errors import InvalidMessageError
from fedveil.runners.simulation import Federation, make_config
from fedveil.secagg.protocol.server import ServerRound
from fedveil.secagg.protocol.stages import Stage
from fedveil.server.journal import RoundJournal
from fedveil.server.replay import replay
from tests.helpers.journalled_round import journalled_round

DIMENSION = 2000


def journal_the_uploads(path: Path) -> tuple[RoundJournal, Federation, ServerRound, int]:
    """Run a round to the end of its masked-input uploads, journalling as the service does
    (every accepted message, every chunk, each upload's checksum, each stage close)."""
    federation = Federation.enrol(4)
    config = make_config(federation, DIMENSION)
    rng = np.random.default_rng(3)
    inputs = {
        cid: (rng.normal(0, 0.1, DIMENSION), int(rng.integers(1, 50))) for cid in config.roster
    }
    run = journalled_round(path, federation, config, inputs)
    run.run_to_uploads()
    return run.journal, federation, run.server, run.rid


def test_an_intact_journal_replays_every_upload(tmp_path: Path) -> None:
    journal, federation, server, _ = journal_the_uploads(tmp_path / "journal.sqlite3")
    (record,) = journal.open_rounds()
    replayed, _ = replay(journal, record, federation.roster)
    assert isinstance(replayed, ServerRound)
    assert replayed.stage is Stage.CONSISTENCY_CHECK
    assert replayed.uploaded == server.uploaded and len(server.uploaded) == 4
    assert np.array_equal(replayed._sum, server._sum)
    journal.close()


def test_a_chunk_damaged_in_the_journal_fails_the_replay(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    journal, federation, server, rid = journal_the_uploads(path)
    victim = sorted(server.uploaded)[1]
    damaged = bytearray(journal.chunk(rid, victim, 1))
    damaged[7] ^= 0x10  # one bit, in the middle of the upload
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE upload_chunks SET data = ? WHERE round_id = ? AND client_id = ? AND idx = 1",
            (bytes(damaged), rid, victim),
        )
    (record,) = journal.open_rounds()
    with pytest.raises(InvalidMessageError, match="digest mismatch"):
        replay(journal, record, federation.roster)
    journal.close()
