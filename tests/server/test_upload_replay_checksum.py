"""A server restarted mid-round replays the journalled masked inputs against the checksums
their clients sent: the key comes from the journalled spec's session id, so an intact
journal replays, and a chunk damaged on disk fails the replay instead of a wrong sum."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from fedveil.errors import InvalidMessageError
from fedveil.proto.convert import config_to_spec
from fedveil.runners.simulation import Federation, make_config
from fedveil.secagg.protocol.client import ClientSession
from fedveil.secagg.protocol.messages import MaskedInput
from fedveil.secagg.protocol.server import ServerRound
from fedveil.secagg.protocol.stages import Stage
from fedveil.secagg.protocol.upload import aligned_chunk_bytes
from fedveil.secagg.protocol.upload_checksum import upload_checksum
from fedveil.server.journal import RoundJournal
from fedveil.server.replay import encode_message, replay

DIMENSION = 2000


def journal_the_uploads(path: Path) -> tuple[RoundJournal, Federation, ServerRound, int]:
    """Run a round to the end of its masked-input uploads, journalling as the service does
    (every accepted message, every chunk, each upload's checksum, each stage close)."""
    federation = Federation.enrol(4)
    config = make_config(federation, DIMENSION)
    chunk = aligned_chunk_bytes(config.quantization.bits, 4096)
    spec = config_to_spec(config, min_cohort=3, chunk_bytes=chunk, stage_timeout_s=5.0)
    journal = RoundJournal(path)
    rid = config.round_id
    journal.begin_round(rid, spec.SerializeToString())
    server = ServerRound(config, federation.roster, chunk_bytes=chunk, quorum=3)
    rng = np.random.default_rng(3)
    sessions = {}
    for cid in config.roster:
        sessions[cid] = ClientSession(config, cid, federation.identities[cid], federation.roster)
        sessions[cid].set_input(rng.normal(0, 0.1, DIMENSION), int(rng.integers(1, 50)))

    def accept(message: object) -> None:
        server.receive(message)
        journal.record(rid, *encode_message(rid, message))

    def close() -> None:
        stage = server.stage
        server.advance()
        journal.record(rid, "advance", "", stage.value.encode())

    for session in sessions.values():
        accept(session.advertise())
    close()
    for cid, session in sessions.items():
        accept(session.handle(server.request_for(cid)))
    close()
    for cid, session in sessions.items():
        upload = session.handle(server.request_for(cid))
        assert isinstance(upload, MaskedInput)
        payload = upload.payload
        server.begin_masked_input(cid, len(payload))
        for index in range(-(-len(payload) // chunk)):
            piece = payload[index * chunk : (index + 1) * chunk]
            server.add_masked_chunk(cid, index, piece)
            journal.record_chunk(rid, cid, index, piece)
        checksum = upload_checksum(config.session_id, cid, payload)
        server.finish_masked_input(cid, checksum)
        journal.record(rid, "finish", cid, checksum)
    close()
    return journal, federation, server, rid


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
