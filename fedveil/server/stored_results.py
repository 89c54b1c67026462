"""Every published result, kept in the journal and served from there once it left memory.

Why: a party that missed a round (it dropped out, was not a survivor, or its download
failed) holds a stale model chain (secagg.protocol.model_chain) and can take part again
only once it has that round's result. The coordinator keeps just `keep_results` rounds
in memory and, after a restart, only the rounds left open; so each result is journalled
when it is published, exactly as GetResult streams it (the header and the pieces), and a
download of a round no longer in memory streams the journalled copy: the same header,
chunks and SHA-256, so a client cannot tell the two apart. Nothing here is secret: every
survivor received the result, and the server already holds it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedveil.proto import aggregation_pb2 as pb
from fedveil.proto import convert
from fedveil.secagg.ckks.messages import CkksResult
from fedveil.secagg.ckks.server_round import CkksServerRound
from fedveil.server.active_round import ActiveRound
from fedveil.server.errors import RoundFailedError, UnknownRoundError
from fedveil.server.journal import RoundJournal

if TYPE_CHECKING:
    from fedveil.server.coordinator import RoundCoordinator

_SQLITE_MAX_INT = 2**63 - 1


@dataclass(frozen=True)
class ServedResult:
    """What one GetResult streams: the header (first chunk), the pieces, their SHA-256."""

    header: pb.ResultHeader
    pieces: Iterable[bytes]
    sha256: bytes


def result_header(active: ActiveRound) -> pb.ResultHeader:
    """The header of a released round's result, built the one way both sources use."""
    result = active.server.result
    assert result is not None
    pieces, _ = active.serialised_result(int(active.spec.chunk_bytes))
    header = pb.ResultHeader(
        round_id=active.round_id,
        survivors=list(result.survivors),
        dimension=int(active.spec.dimension),
        total_bytes=sum(len(piece) for piece in pieces),
        mode=active.spec.mode,
        chunk_count=len(pieces),
    )
    if isinstance(result, CkksResult):
        header.key_fingerprint = active.spec.ckks.key_fingerprint or _fingerprint(active)
    else:
        header.total_weight = result.estimate.total_weight
        header.error_bound = result.estimate.error_bound
    if active.privacy is not None:
        header.privacy.CopyFrom(convert.privacy_to_pb(active.privacy))
    return header


def keep_result(journal: RoundJournal, active: ActiveRound) -> bytes:
    """Journal a released round's result as it is streamed; return its published digest
    (the next round's model hash chains it). Blocking: run it in a worker thread."""
    pieces, sha256 = active.serialised_result(int(active.spec.chunk_bytes))
    header = result_header(active)
    journal.save_result(active.round_id, header.SerializeToString(), pieces, sha256)
    return active.published_digest()


def served_result(coordinator: RoundCoordinator, round_id: int) -> ServedResult:
    """The result of `round_id` from memory, or from the journal once it left memory.

    A round that failed has no result (RoundFailedError, as while it is in memory); a
    round this server never ran, or finished before results were kept, is unknown.
    """
    try:
        active = coordinator.get(round_id)
    except UnknownRoundError as unknown:
        return _from_journal(coordinator.journal, round_id, unknown)
    if active.server.result is None:
        raise RoundFailedError(
            f"round {round_id} has no result (stage {active.server.stage.value}"
            + (f": {active.server.failure}" if active.server.failure else "")
            + ")"
        )
    pieces, sha256 = active.serialised_result(int(active.spec.chunk_bytes))
    return ServedResult(result_header(active), pieces, sha256)


def _from_journal(journal: RoundJournal, round_id: int, unknown: UnknownRoundError) -> ServedResult:
    if not 0 < round_id <= _SQLITE_MAX_INT:  # a uint64 on the wire: no round of ours
        raise unknown
    stored = journal.result(round_id)
    if stored is not None:
        header = pb.ResultHeader.FromString(stored.header)
        return ServedResult(header, journal.result_pieces(round_id), stored.sha256)
    status = journal.round_status(round_id)
    if status is not None and status[0] == "failed":
        reason = f": {status[1]}" if status[1] else ""
        raise RoundFailedError(f"round {round_id} has no result (stage failed{reason})")
    raise unknown


def _fingerprint(active: ActiveRound) -> bytes:
    """The key a CKKS round's sum is under (its own, in the round that made the key)."""
    server = active.server
    assert isinstance(server, CkksServerRound) and server.epoch is not None
    return server.epoch.fingerprint
