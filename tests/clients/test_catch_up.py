"""A party that missed a round catches up and takes part in the next one.

Four clients (the test policy wants at least three survivors): round 1 runs without the
fourth (it never joins; the server's stage deadline closes the round without it). The
fourth then fetches round 1's result with catch_up and joins round 2, which all four
finish with one result; without catch_up it is refused with the stale-chain message.

Attacker first: a malicious server serves the rejoining party a tampered round-1 result
(well-formed, with the SHA-256 of the tampered bytes). Told the round's real model hash,
the party refuses at once and applies nothing; told the hash its tampered chain gives,
its session id differs from everyone's, so round 2 fails closed: no result, no unmask.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fedveil.server.result_stream as result_stream
from fedveil.clients.calls import RetryPolicy, fetch_result
from fedveil.clients.catch_up import needs_catch_up
from fedveil.clients.errors import TransportError
from fedveil.clients.transport import AggregateResult, AsyncAggregationClient
from fedveil.errors import KeySubstitutionError, SessionMismatchError
from fedveil.proto import aggregation_pb2 as pb
from fedveil.proto.convert import spec_to_config
from fedveil.secagg.protocol.model_chain import ModelChain, result_digest, round_model_hash
from fedveil.secagg.protocol.server import ServerRound
from fedveil.server.stored_results import ServedResult
from tests.helpers.service_harness import (
    BASE_MODEL_HASH,
    client_for,
    make_keys,
    running_server,
    settings_for,
)
from tests.server.test_model_binding import announce_own_model_to

D = 300


def update(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.1, D).astype(np.float32)


async def first_round_without(
    clients: dict[str, AsyncAggregationClient], absent: str
) -> dict[str, AggregateResult]:
    """Round 1 with everyone but `absent`; the stage deadline closes it without it."""
    present = {c: client for c, client in clients.items() if c != absent}
    results = await asyncio.gather(
        *(client.run_round(update(i), 3 + i) for i, client in enumerate(present.values()))
    )
    return dict(zip(present, results, strict=True))


async def second_round(
    clients: dict[str, AsyncAggregationClient], late: str, before: Any
) -> dict[str, AggregateResult | BaseException]:
    """Round 2: the others join at once; `late` first runs `before()` (its catch-up)."""

    async def join(cid: str, client: AsyncAggregationClient, seed: int) -> AggregateResult:
        if cid == late:
            await before()
        return await client.run_round(update(seed), 2)

    outcomes = await asyncio.gather(
        *(join(c, client, 10 + i) for i, (c, client) in enumerate(clients.items())),
        return_exceptions=True,
    )
    return dict(zip(clients, outcomes, strict=True))


@pytest.mark.parametrize("catches_up", [True, False])
def test_a_party_that_missed_a_round_rejoins_after_catch_up(
    tmp_path: Path, catches_up: bool
) -> None:
    async def run() -> None:
        keys, ids = make_keys(tmp_path, 4)
        late = ids[3]
        settings = settings_for(
            tmp_path, keys, dimension=D, stage_timeout_s=2.0, rounds=2, keep_results=1
        )
        async with running_server(settings) as server:
            clients = {c: client_for(keys, c, server.port) for c in ids}
            first = await first_round_without(clients, late)
            caught: list[AggregateResult] = []

            async def catch_up() -> None:
                info = await clients[late].wait_for_round()
                assert int(info.spec.round_id) == 2
                assert clients[late].needs_catch_up(info)
                if catches_up:
                    caught.extend(await clients[late].catch_up(info))
                    assert not clients[late].needs_catch_up(info)

            second = await second_round(clients, late, catch_up)
            for client in clients.values():
                await client.close()
        assert set(first[ids[0]].survivors) == set(ids[:3])
        if not catches_up:
            refusal = second[late]
            assert isinstance(refusal, SessionMismatchError), refusal
            assert "stale" in str(refusal)
            assert clients[late].model_chain.round_id is None
            for c in ids[:3]:
                result = second[c]
                assert isinstance(result, AggregateResult) and late not in result.survivors
            return
        [missed] = caught
        assert missed.round_id == 1 and missed.survivors == first[ids[0]].survivors
        assert np.array_equal(missed.weighted_mean, first[ids[0]].weighted_mean)
        assert missed.result_digest == first[ids[0]].result_digest
        results = [second[c] for c in ids]
        assert all(isinstance(r, AggregateResult) for r in results), results
        digests = {r.result_digest for r in results if isinstance(r, AggregateResult)}
        assert len(digests) == 1
        assert all(set(r.survivors) == set(ids) for r in results if isinstance(r, AggregateResult))
        chains = {(clients[c].model_chain.round_id, clients[c].model_chain.model_hash) for c in ids}
        assert len(chains) == 1 and next(iter(chains))[0] == 2

    asyncio.run(run())


def test_needs_catch_up_only_when_a_published_result_was_missed() -> None:
    chain = ModelChain(BASE_MODEL_HASH)
    info = pb.RoundInfo(spec=pb.RoundSpec(round_id=1, model_hash=chain.model_hash))
    assert not needs_catch_up(chain, info)
    info.spec.round_id = 3  # rounds 1 and 2 failed: the model hash did not move
    assert not needs_catch_up(chain, info)
    info.spec.model_hash = round_model_hash(BASE_MODEL_HASH, hashlib.sha256(b"r2").digest())
    assert needs_catch_up(chain, info)


def tamper_round_one(monkeypatch: pytest.MonkeyPatch, served: dict[str, Any]) -> None:
    """The malicious server: while `served["on"]`, round 1's result is streamed with one
    value changed and the SHA-256 of the changed bytes (a well-formed stream)."""
    real = result_stream.served_result

    def tampered(coordinator: Any, round_id: int) -> ServedResult:
        honest = real(coordinator, round_id)
        if not served.get("on") or round_id != 1:
            return honest
        mean = np.frombuffer(b"".join(honest.pieces), dtype="<f8").copy()
        mean[0] += 0.01  # inside every bound: only the chain can tell
        data = mean.tobytes()
        served["header"], served["sha256"] = honest.header, hashlib.sha256(data).digest()
        return ServedResult(honest.header, [data], served["sha256"])

    monkeypatch.setattr(result_stream, "served_result", tampered)


@pytest.mark.parametrize("announcement", ["the round's model", "the tampered chain's model"])
def test_a_tampered_catch_up_result_fails_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, announcement: str
) -> None:
    async def run() -> None:
        keys, ids = make_keys(tmp_path, 4)
        late = ids[3]
        settings = settings_for(tmp_path, keys, dimension=D, stage_timeout_s=2.0, rounds=2)
        served: dict[str, Any] = {}
        tamper_round_one(monkeypatch, served)
        async with running_server(settings) as server:
            clients = {c: client_for(keys, c, server.port) for c in ids}
            honest = await first_round_without(clients, late)
            outcome: dict[str, object] = {}

            async def catch_up() -> None:
                victim = clients[late]
                info = await victim.wait_for_round()
                served["on"] = True
                if announcement == "the tampered chain's model":
                    header = await served_header(victim)
                    tampered = result_digest(
                        round_id=1,
                        mode="secagg",
                        survivors=header.survivors,
                        total_weight=header.total_weight,
                        error_bound=header.error_bound,
                        payload_sha256=served["sha256"],
                    )
                    config = dataclasses.replace(
                        spec_to_config(info.spec),
                        model_hash=round_model_hash(BASE_MODEL_HASH, tampered),
                    )
                    info.spec.model_hash, info.spec.session_id = (
                        config.model_hash,
                        config.session_id,
                    )
                try:
                    outcome["catch_up"] = await victim.catch_up(info)
                except SessionMismatchError as exc:
                    outcome["catch_up"] = exc
                if announcement == "the tampered chain's model":
                    announce_own_model_to(victim, server)

            second = await second_round(clients, late, catch_up)
            active = server.coordinator.rounds[2].server
            assert isinstance(active, ServerRound)
            for client in clients.values():
                await client.close()
        victim_chain = clients[late].model_chain
        honest_digest = honest[ids[0]].result_digest
        assert isinstance(second[late], BaseException), second[late]  # no round-2 result
        if announcement == "the round's model":
            refusal = outcome["catch_up"]
            assert isinstance(refusal, SessionMismatchError), refusal
            assert "nothing was applied" in str(refusal)
            assert victim_chain.round_id is None  # still stale: refused again in round 2
            assert isinstance(second[late], SessionMismatchError)
            assert late not in active.advertised  # not a byte of its round-2 input sent
            for c in ids[:3]:
                result = second[c]
                assert isinstance(result, AggregateResult), result
                assert late not in result.survivors
        else:
            caught = outcome["catch_up"]
            assert isinstance(caught, list) and len(caught) == 1, caught
            applied: AggregateResult = caught[0]
            assert applied.result_digest != honest_digest  # it holds another chain
            assert victim_chain.round_id == 1
            # its session id is not the others': nobody's keys verify, the round fails
            # before any masked input, so nothing of its input can be unmasked
            for c in ids:
                outcome_c = second[c]
                assert isinstance(outcome_c, KeySubstitutionError | TransportError), outcome_c
            assert active.result is None

    asyncio.run(run())


async def served_header(victim: AsyncAggregationClient) -> pb.ResultHeader:
    """Round 1's result as the malicious server serves the victim (a side download; the
    server, which tampers, knows the tampered digest anyway)."""
    request = pb.GetResultRequest(round_id=1, client_id=victim.client_id)
    downloaded = await fetch_result(
        victim._ensure_stub(), request, expected_dimension=D, retry=RetryPolicy(), timeout_s=10
    )
    return downloaded.header
