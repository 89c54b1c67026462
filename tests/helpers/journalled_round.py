"""A SecAgg+ round driven message by message and journalled as the service journals it
(every accepted message, every upload chunk, each upload's checksum, each stage close),
for the tests that restart a server mid-round and replay that journal."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedveil.proto.convert import config_to_spec
from fedveil.runners.simulation import Federation
from fedveil.secagg.protocol.client import ClientSession
from fedveil.secagg.protocol.config import RoundConfig
from fedveil.secagg.protocol.messages import MaskedInput
from fedveil.secagg.protocol.server import ServerRound
from fedveil.secagg.protocol.upload import aligned_chunk_bytes
from fedveil.secagg.protocol.upload_checksum import upload_checksum
from fedveil.server.journal import RoundJournal
from fedveil.server.replay import encode_message

QUORUM = 3


@dataclass
class JournalledRound:
    """The live server, its clients and the journal beside them (round `rid`)."""

    config: RoundConfig
    federation: Federation
    journal: RoundJournal
    server: ServerRound
    sessions: dict[str, ClientSession]
    rid: int
    spec_bytes: bytes
    chunk: int

    def accept(self, message: object) -> None:
        self.server.receive(message)
        self.journal.record(self.rid, *encode_message(self.rid, message))

    def close(self) -> None:
        stage = self.server.stage
        self.server.advance()
        self.journal.record(self.rid, "advance", "", stage.value.encode())

    def run_to_uploads(self) -> None:
        """Advertise, share keys, and every client's masked input chunk by chunk."""
        for session in self.sessions.values():
            self.accept(session.advertise())
        self.close()
        for cid, session in self.sessions.items():
            self.accept(session.handle(self.server.request_for(cid)))
        self.close()
        chunk = self.chunk
        for cid, session in self.sessions.items():
            upload = session.handle(self.server.request_for(cid))
            assert isinstance(upload, MaskedInput)
            payload = upload.payload
            self.server.begin_masked_input(cid, len(payload))
            for index in range(-(-len(payload) // chunk)):
                piece = payload[index * chunk : (index + 1) * chunk]
                self.server.add_masked_chunk(cid, index, piece)
                self.journal.record_chunk(self.rid, cid, index, piece)
            checksum = upload_checksum(self.config.session_id, cid, payload)
            self.server.finish_masked_input(cid, checksum)
            self.journal.record(self.rid, "finish", cid, checksum)
        self.close()

    def run_to_result(self) -> None:
        """After the uploads: the consistency check, then unmasking."""
        for _ in range(2):
            for cid, session in self.sessions.items():
                self.accept(session.handle(self.server.request_for(cid)))
            self.close()


def journalled_round(
    path: Path,
    federation: Federation,
    config: RoundConfig,
    inputs: dict[str, tuple[np.ndarray, int]],
    noise_seed: bytes | None = None,
) -> JournalledRound:
    """Open round `config` in a journal at `path` (its spec, and the central-DP noise key
    when `noise_seed` is given, as the service records them) and set each client's input."""
    chunk = aligned_chunk_bytes(config.quantization.bits, 4096)
    spec = config_to_spec(config, min_cohort=QUORUM, chunk_bytes=chunk, stage_timeout_s=5.0)
    journal = RoundJournal(path)
    rid = config.round_id
    spec_bytes = spec.SerializeToString()
    journal.begin_round(rid, spec_bytes)
    extra = {}
    if noise_seed is not None:
        journal.record(rid, "dp-noise-seed", "", noise_seed)
        extra["noise_seed"] = noise_seed
    roster = federation.roster
    server = ServerRound(config, roster, chunk_bytes=chunk, quorum=QUORUM, **extra)
    sessions = {}
    for cid in config.roster:
        sessions[cid] = ClientSession(config, cid, federation.identities[cid], roster)
        vector, weight = inputs[cid]
        sessions[cid].set_input(vector, weight)
    return JournalledRound(config, federation, journal, server, sessions, rid, spec_bytes, chunk)
