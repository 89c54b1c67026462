"""Streamed uploads against the journal: each one is finished whole or rolled back whole.

Why apart from the coordinator and the servicer: the SecAgg, plaintext and CKKS uploads
all arrive in chunks that are added to the round's sum (and journalled) as they come, so
an upload that is abandoned half-way, or whose checksum does not match, must be subtracted
again and erased from the journal; the same rules serve every mode, and a stage that
closes rolls back whatever is still in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fedveil.errors import InvalidMessageError
from fedveil.server.active_round import ActiveRound
from fedveil.server.journal import RoundJournal


class StreamedUploads:
    """Finishes, rolls back and rejoins the chunked uploads of the coordinator's rounds."""

    def __init__(self, journal: RoundJournal, lock: asyncio.Lock) -> None:
        self.journal = journal
        self.lock = lock

    def roll_back(self, active: ActiveRound, client_id: str) -> None:
        """Subtract an unfinished upload from the sum and erase it from the journal (lock held)."""
        chunks = list(self.journal.chunks(active.round_id, client_id))
        active.server.abort_masked_input(client_id, chunks)
        self.journal.forget_upload(active.round_id, client_id)

    def finish_if_last(
        self,
        active: ActiveRound,
        client_id: str,
        digest: bytes,
        finish: Callable[[str, bytes], None],
    ) -> bool:
        """After a chunk (lock held): on the last one, which carries the checksum (`digest`:
        the mode's, see VectorChunk.checksum), close the upload and journal it, or roll it
        back whole; True once the upload is complete."""
        if not digest:
            return False
        try:
            finish(client_id, digest)
        except InvalidMessageError as exc:
            self.roll_back(active, client_id)
            raise InvalidMessageError(
                f"{exc}; the upload was discarded: re-send it from chunk 0"
            ) from exc
        self.journal.record(active.round_id, "finish", client_id, digest)
        return True

    async def rejoin_complete(self, active: ActiveRound, client_id: str) -> bool:
        """The "already complete" marker: a client whose stream broke after its last chunk
        (or after a server restart) only rejoins the wait, like a resend."""
        async with self.lock:
            if client_id in active.server.uploaded:
                return True
        raise InvalidMessageError("the upload is not complete: resume from GetUploadStatus")
