"""Buffered (FedBuff) rounds over real gRPC with mutual TLS: round.buffer_size = K.

What is checked, attacker first where there is a security property:
- liveness: with four enrolled clients and K = 3, a round closes its key advertisement
  as soon as three have advertised and runs among exactly those three; the fourth (slow)
  client's update lands in a later round, after it caught up on the result it missed;
  a client that comes after its round's buffer closed is told to join the next round.
- correctness: each round's decoded result is the weighted mean of exactly the K updates
  in its buffer.
- the cohort floor: a client whose own minimum cohort exceeds K refuses to sign a
  K-client survivor set, so the round fails closed and nothing is released (and with a
  floor of K the same round succeeds): the server cannot use buffering to shrink a sum
  below what a client accepts.
- configuration: impossible buffers are one ConfigError line naming what to fix.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedveil.clients.credentials import ClientCredentials
from fedveil.clients.transport import AggregateResult, AsyncAggregationClient, TransportSecurity
from fedveil.errors import CohortTooSmallError, ConfigError
from fedveil.proto import aggregation_pb2 as pb
from fedveil.secagg.protocol.config import ClientPolicy
from fedveil.server.keys_store import client_dir, load_roster
from fedveil.server.round_modes import check_buffer
from fedveil.server.settings import RoundSettings, load_settings
from tests.helpers.service_harness import (
    BASE_MODEL_HASH,
    client_for,
    make_keys,
    raw_stub,
    running_server,
    settings_for,
)

D = 200
# Generous: a buffered stage closes on its K-th advertisement, never on this deadline; if
# it did not, the guard below fails the test instead of letting it hang.
STAGE_TIMEOUT_S = 120.0
GUARD_S = 90.0


def inputs(ids: list[str], seed: int) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    rng = np.random.default_rng(seed)
    updates = {c: rng.normal(0, 0.1, D).astype(np.float32) for c in ids}
    weights = {c: int(rng.integers(1, 50)) for c in ids}
    return updates, weights


async def buffer_of(
    clients: dict[str, AsyncAggregationClient], members: list[str], seed: int
) -> tuple[dict[str, AggregateResult | BaseException], np.ndarray]:
    """`members` join the open round together; their outcomes and the plaintext weighted
    mean of exactly their updates."""
    updates, weights = inputs(members, seed)
    outcomes = await asyncio.wait_for(
        asyncio.gather(
            *(clients[c].run_round(updates[c], weights[c]) for c in members),
            return_exceptions=True,
        ),
        GUARD_S,
    )
    stacked = np.stack([updates[c].astype(np.float64) for c in members])
    expected = np.average(stacked, axis=0, weights=[weights[c] for c in members])
    return dict(zip(members, outcomes, strict=True)), expected


def check_buffer_result(
    outcomes: dict[str, AggregateResult | BaseException], expected: np.ndarray, round_id: int
) -> None:
    for result in outcomes.values():
        assert isinstance(result, AggregateResult), outcomes
        assert result.round_id == round_id
        assert set(result.survivors) == set(outcomes)  # exactly the K of the buffer
        assert np.allclose(result.weighted_mean, expected, atol=result.error_bound + 1e-9)


def client_with_floor(
    keys: Path, client_id: str, port: int, *, min_cohort: int
) -> AsyncAggregationClient:
    """A test client (as service_harness.client_for) whose own minimum cohort is given."""
    credentials = ClientCredentials.load(client_dir(keys, client_id))
    return AsyncAggregationClient(
        f"localhost:{port}",
        client_id,
        credentials.identity,
        load_roster(keys).identities(),
        TransportSecurity.from_credentials(credentials),
        policy=ClientPolicy(min_cohort=min_cohort, min_threshold=2),
        base_model_hash=BASE_MODEL_HASH,
    )


async def catch_up_to_open_round(client: AsyncAggregationClient) -> list[int]:
    info = await client.wait_for_round(timeout_s=GUARD_S)
    missed = await client.catch_up(info) if client.needs_catch_up(info) else []
    return [r.round_id for r in missed]


def test_buffered_rounds_close_at_k_and_a_slow_client_lands_later(tmp_path: Path) -> None:
    async def run() -> None:
        keys, ids = make_keys(tmp_path, 4)
        settings = settings_for(
            tmp_path, keys, dimension=D, stage_timeout_s=STAGE_TIMEOUT_S, rounds=3, buffer_size=3
        )
        async with running_server(settings) as server:
            clients = {c: client_for(keys, c, server.port) for c in ids}
            a, b, c, slow = ids
            # Round 1: the slow client is still training; three fill the buffer.
            first, expected = await buffer_of(clients, [a, b, c], seed=1)
            check_buffer_result(first, expected, round_id=1)
            # Round 2: the slow client arrives, fetches the result it missed, and its
            # update (trained before round 1 closed) lands in this buffer with a and b.
            assert await catch_up_to_open_round(clients[slow]) == [1]
            second, expected = await buffer_of(clients, [slow, a, b], seed=2)
            check_buffer_result(second, expected, round_id=2)
            # c comes after round 2's buffer closed: told to join the next round.
            channel, stub = raw_stub(keys, c, server.port)
            late = pb.AdvertiseKeysRequest(
                round_id=2, advertisement=pb.KeyAdvertisement(client_id=c)
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.AdvertiseKeys(late, timeout=GUARD_S)
            await channel.close()
            assert refused.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            assert "join the next one" in str(refused.value.details())
            # Round 3: c catches up on round 2 and joins; a K of 3 again.
            assert await catch_up_to_open_round(clients[c]) == [2]
            third, expected = await buffer_of(clients, [c, a, slow], seed=3)
            check_buffer_result(third, expected, round_id=3)
            for client in clients.values():
                await client.close()

    asyncio.run(run())


def test_a_client_whose_cohort_floor_exceeds_k_refuses_the_buffer(tmp_path: Path) -> None:
    """The malicious-server direction: a server that buffers K = 3 while a client demands
    4 is refused before that client sends any key (K travels in the spec, bound into the
    session id), so no 3-client sum is released; the honest direction (floor 3) is the
    test above."""

    async def run() -> None:
        keys, ids = make_keys(tmp_path, 4)
        # The refusing client never advertises, so the first stage ends on its deadline.
        settings = settings_for(
            tmp_path, keys, dimension=D, stage_timeout_s=3.0, rounds=1, buffer_size=3
        )
        async with running_server(settings) as server:
            clients = {c: client_for(keys, c, server.port) for c in ids[:2]}
            clients[ids[2]] = client_with_floor(keys, ids[2], server.port, min_cohort=4)
            outcomes, _ = await buffer_of(clients, ids[:3], seed=4)
            for client in clients.values():
                await client.close()
        assert isinstance(outcomes[ids[2]], CohortTooSmallError), outcomes
        assert "round buffers K=3 clients, below this client's minimum cohort 4" in str(
            outcomes[ids[2]]
        )
        assert not any(isinstance(r, AggregateResult) for r in outcomes.values()), outcomes

    asyncio.run(run())


def test_impossible_buffers_are_refused_naming_what_to_fix(tmp_path: Path) -> None:
    base = {"dimension": 10, "model_hash": BASE_MODEL_HASH}
    with pytest.raises(ConfigError, match=r"buffer_size = 2 is below round.min_cohort = 3"):
        RoundSettings(**base, buffer_size=2, min_cohort=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match='needs mode = "secagg"'):
        RoundSettings(**base, buffer_size=3, mode="plaintext")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="below round.threshold = 4"):
        RoundSettings(**base, buffer_size=3, threshold=4)  # type: ignore[arg-type]
    ok = RoundSettings(**base, buffer_size=3)  # type: ignore[arg-type]
    check_buffer(ok, 4)  # 3 of 4: t = 3, quorum 3
    with pytest.raises(ConfigError, match="exceeds the roster's 2 clients"):
        check_buffer(ok, 2)
    with pytest.raises(ConfigError, match="raise buffer_size to at least 4"):
        check_buffer(ok, 6)  # t = 4 in a complete graph of 6
    with pytest.raises(ConfigError, match="complete neighbour graph"):
        check_buffer(RoundSettings(**base, buffer_size=6, neighbours=4), 9)  # type: ignore[arg-type]
    config = tmp_path / "server.toml"
    config.write_text(
        f'[round]\ndimension = 10\nmodel_hash = "{BASE_MODEL_HASH.hex()}"\nbuffer_size = 1\n'
    )
    with pytest.raises(ConfigError, match="round.buffer_size"):
        load_settings(config, {"insecure": True})
