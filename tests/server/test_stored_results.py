"""Every published result is kept: served after it left memory and after a restart.

Why it matters: a party that missed a round can take part again only with that round's
result (secagg.protocol.model_chain); the server keeps `keep_results` rounds in memory and,
after a restart, none that had finished. Each check compares what GetResult streams from
the journal with what it streamed from memory, chunk for chunk, so a client cannot tell
the two apart; a failed round still has no result and an unknown one is still unknown.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedveil.clients.streams import ResultAssembler
from fedveil.clients.transport import AggregateResult, AsyncAggregationClient
from fedveil.proto import aggregation_pb2 as pb
from fedveil.secagg.protocol.model_chain import result_digest
from fedveil.server.journal import RoundJournal
from tests.helpers.service_harness import (
    client_for,
    make_keys,
    raw_stub,
    running_server,
    settings_for,
)

D = 1000  # 8000 bytes of float64 mean: two chunks of 4096
CHUNK = 4096


async def get_result(keys: Path, client_id: str, port: int, round_id: int) -> list[bytes]:
    """GetResult as raw serialised chunks (bit for bit what the client receives)."""
    channel, stub = raw_stub(keys, client_id, port)
    try:
        request = pb.GetResultRequest(round_id=round_id, client_id=client_id)
        return [chunk.SerializeToString() async for chunk in stub.GetResult(request)]
    finally:
        await channel.close()


async def refusal(keys: Path, client_id: str, port: int, round_id: int) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await get_result(keys, client_id, port, round_id)
    return caught.value


def assembled(chunks: list[bytes]) -> tuple[pb.ResultHeader, np.ndarray]:
    assembler = ResultAssembler()
    for raw in chunks:
        assembler.add(pb.ResultChunk.FromString(raw))
    return assembler.finish()


async def run_round(
    clients: dict[str, AsyncAggregationClient], seed: int
) -> dict[str, AggregateResult]:
    rng = np.random.default_rng(seed)
    outcomes = await asyncio.gather(
        *(c.run_round(rng.normal(0, 0.1, D).astype(np.float32), 5) for c in clients.values())
    )
    return dict(zip(clients, outcomes, strict=True))


def test_an_evicted_result_is_served_bit_identical_from_the_journal(tmp_path: Path) -> None:
    """keep_results=1: round 1 leaves memory as round 2 opens (before its survivors even
    download it). GetResult still streams it, and it is what they received and chained."""

    async def run() -> None:
        keys, ids = make_keys(tmp_path, 3)
        settings = settings_for(
            tmp_path,
            keys,
            dimension=D,
            stage_timeout_s=3.0,
            rounds=2,
            keep_results=1,
            chunk_bytes=CHUNK,
        )
        async with running_server(settings) as server:
            clients = {c: client_for(keys, c, server.port) for c in ids}
            first = await run_round(clients, seed=1)
            await run_round(clients, seed=2)
            for client in clients.values():
                await client.close()
            assert 1 not in server.coordinator.rounds  # evicted: only round 2 is kept
            assert 2 in server.coordinator.rounds
            evicted = await get_result(keys, ids[0], server.port, 1)
            in_memory = await get_result(keys, ids[1], server.port, 2)
            stored_two = server.journal.result(2)
            pieces_two = list(server.journal.result_pieces(2))
            chained = server.journal.last_result_digest()
        header, mean = assembled(evicted)
        assert len(evicted) == 2 and header.chunk_count == 2
        got = first[ids[0]]
        assert np.array_equal(mean, got.weighted_mean)
        assert (header.round_id, tuple(header.survivors)) == (1, got.survivors)
        assert (header.total_weight, header.error_bound) == (got.total_weight, got.error_bound)
        payload = hashlib.sha256(mean.astype("<f8").tobytes()).digest()
        assert pb.ResultChunk.FromString(evicted[-1]).sha256 == payload
        digest = result_digest(
            round_id=1,
            mode="secagg",
            survivors=header.survivors,
            total_weight=header.total_weight,
            error_bound=header.error_bound,
            payload_sha256=payload,
        )
        assert {r.result_digest for r in first.values()} == {digest}
        # the journalled copy of round 2 is what the in-memory stream sends, bit for bit
        assert stored_two is not None and chained is not None and chained[0] == 2
        live = [pb.ResultChunk.FromString(raw) for raw in in_memory]
        assert live[0].header.SerializeToString() == stored_two.header
        assert [chunk.data for chunk in live] == pieces_two
        assert live[-1].sha256 == stored_two.sha256

    asyncio.run(run())


def test_a_result_finished_before_a_restart_is_served_after_it(tmp_path: Path) -> None:
    async def run() -> None:
        keys, ids = make_keys(tmp_path, 3)
        settings = settings_for(
            tmp_path, keys, dimension=D, stage_timeout_s=3.0, rounds=1, chunk_bytes=CHUNK
        )
        async with running_server(settings) as server:
            clients = {c: client_for(keys, c, server.port) for c in ids}
            await run_round(clients, seed=3)
            for client in clients.values():
                await client.close()
            before = await get_result(keys, ids[0], server.port, 1)  # from memory
        async with running_server(settings) as again:  # same journal: round 2 is open
            assert 1 not in again.coordinator.rounds
            after = await get_result(keys, ids[2], again.port, 1)
            unknown = await refusal(keys, ids[2], again.port, 7)
        assert after == before  # every chunk, header and digest, bit for bit
        assert unknown.code() is grpc.StatusCode.NOT_FOUND

    asyncio.run(run())


def test_a_failed_round_still_has_no_result_after_eviction_and_restart(tmp_path: Path) -> None:
    """Only two of four join round 1 (below min_cohort 3): it fails at the deadline and
    leaves memory when round 2 opens. It answers "no result", as while it was in memory."""

    async def run() -> None:
        keys, ids = make_keys(tmp_path, 4)
        settings = settings_for(
            tmp_path, keys, dimension=D, stage_timeout_s=1.0, rounds=2, keep_results=1
        )
        async with running_server(settings) as server:
            clients = {c: client_for(keys, c, server.port) for c in ids[:2]}
            outcomes = await asyncio.gather(
                *(c.run_round(np.zeros(D, dtype=np.float32), 1) for c in clients.values()),
                return_exceptions=True,
            )
            for client in clients.values():
                await client.close()
            assert all(isinstance(o, BaseException) for o in outcomes), outcomes
            for _ in range(200):  # the clients hear of the failure before round 2 opens
                if 1 not in server.coordinator.rounds:
                    break
                await asyncio.sleep(0.05)
            assert 1 not in server.coordinator.rounds
            evicted = await refusal(keys, ids[0], server.port, 1)
        async with running_server(settings) as again:
            restarted = await refusal(keys, ids[0], again.port, 1)
        for error in (evicted, restarted):
            assert error.code() is grpc.StatusCode.FAILED_PRECONDITION, error
            assert "has no result" in str(error.details())

    asyncio.run(run())


def test_a_journal_written_before_results_were_kept_still_opens(tmp_path: Path) -> None:
    path = tmp_path / "state" / "journal.sqlite3"
    path.parent.mkdir(mode=0o700)
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE rounds (round_id INTEGER PRIMARY KEY, spec BLOB NOT NULL, "
        "status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '')"
    )
    old.execute("INSERT INTO rounds VALUES (1, x'00', 'done', '')")
    old.commit()
    old.close()
    path.chmod(0o600)
    journal = RoundJournal(path)
    try:
        assert journal.last_round_id() == 1
        assert journal.result(1) is None and list(journal.result_pieces(1)) == []
        assert journal.save_result(2, b"header", [b"a", b"b"], b"digest")
        assert not journal.save_result(2, b"other", [b"c"], b"other")  # the first copy wins
        stored = journal.result(2)
        assert stored is not None and (stored.header, stored.piece_count) == (b"header", 2)
        assert list(journal.result_pieces(2)) == [b"a", b"b"]
    finally:
        journal.close()
