"""The aggregation service end to end over real gRPC with mutual TLS on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.network import free_port
from tests.helpers.service_harness import client_for, make_keys, running_server, settings_for


def plain_weighted_mean(
    updates: dict[str, np.ndarray], weights: dict[str, int], clip: float
) -> np.ndarray:
    total = sum(weights.values())
    return (
        sum(weights[c] * np.clip(updates[c], -clip, clip).astype(np.float64) for c in updates)
        / total
    )


async def run_federation(
    tmp_path: Path, n: int, d: int, drop: frozenset[str] = frozenset()
) -> tuple[dict, dict, dict]:
    keys, ids = make_keys(tmp_path, n)
    settings = settings_for(tmp_path, keys, dimension=d, stage_timeout_s=3.0, rounds=1)
    rng = np.random.default_rng(n)
    updates = {c: rng.normal(0, 0.4, d).astype(np.float32) for c in ids}
    weights = {c: int(rng.integers(1, 500)) for c in ids}
    async with running_server(settings) as server:
        clients = {c: client_for(keys, c, server.port) for c in ids if c not in drop}
        results = await asyncio.gather(
            *(clients[c].run_round(updates[c], weights[c]) for c in clients)
        )
        for client in clients.values():
            await client.close()
    return updates, weights, dict(zip(clients, results, strict=True))


def test_secagg_round_matches_the_plaintext_weighted_mean(tmp_path: Path) -> None:
    updates, weights, results = asyncio.run(run_federation(tmp_path, n=5, d=20_000))
    expected = plain_weighted_mean(updates, weights, clip=1.0)
    for result in results.values():
        assert result.total_weight == sum(weights.values())
        assert len(result.survivors) == 5
        assert np.max(np.abs(result.weighted_mean - expected)) <= result.error_bound
    first = next(iter(results.values()))
    assert all(np.array_equal(r.weighted_mean, first.weighted_mean) for r in results.values())


async def crash_and_restart(tmp_path: Path, crash_when: str) -> tuple[dict, dict, list]:
    """Run a round; when the server is about to close stage `crash_when` (every message of
    that stage accepted and journalled), it hangs and is killed without a clean shutdown.
    A new server on the same journal and port resumes the round, and the clients' retries
    (exact resends, upload resumption) finish it."""
    from fedveil.secagg.protocol.stages import Stage
    from fedveil.server.app import start_server

    keys, ids = make_keys(tmp_path, 5)
    base = settings_for(tmp_path, keys, dimension=5000, stage_timeout_s=2.0, rounds=1)
    settings = base.replace(port=free_port())
    rng = np.random.default_rng(7)
    updates = {c: rng.normal(0, 0.4, 5000).astype(np.float32) for c in ids}
    weights = {c: int(rng.integers(1, 500)) for c in ids}
    first = await start_server(settings)
    target, reached = Stage(crash_when), asyncio.Event()
    close_stage = first.coordinator._close_stage

    async def hang_before_closing(active):  # type: ignore[no-untyped-def]
        if active.server.stage is target:
            reached.set()
            await asyncio.Event().wait()  # the server hangs here until it is killed
        await close_stage(active)

    first.coordinator._close_stage = hang_before_closing  # type: ignore[method-assign]
    clients = {c: client_for(keys, c, settings.port) for c in ids}
    tasks = [asyncio.ensure_future(clients[c].run_round(updates[c], weights[c])) for c in ids]
    await asyncio.wait_for(reached.wait(), 30)
    await first.server.stop(0)  # killed: no clean shutdown, only what the journal committed
    first.journal.close()
    second = await start_server(settings)
    try:
        resumed = second.coordinator.current
        assert resumed is not None and resumed.round_id == 1, "the open round must be resumed"
        assert resumed.server.stage is target
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
    finally:
        for client in clients.values():
            await client.close()
        await second.stop(0.1)
    return updates, weights, results


@pytest.mark.parametrize(
    "crash_when", ["advertise-keys", "share-keys", "masked-input", "consistency-check", "unmask"]
)
def test_server_killed_mid_round_resumes_from_its_journal(tmp_path: Path, crash_when: str) -> None:
    updates, weights, results = asyncio.run(crash_and_restart(tmp_path, crash_when))
    assert all(not isinstance(r, BaseException) for r in results), results
    for result in results:
        assert len(result.survivors) == 5
        alive = {c: updates[c] for c in result.survivors}
        expected = plain_weighted_mean(alive, {c: weights[c] for c in alive}, clip=1.0)
        assert result.total_weight == sum(weights[c] for c in alive)
        assert np.max(np.abs(result.weighted_mean - expected)) <= result.error_bound


def test_plaintext_baseline_round_gives_the_same_mean(tmp_path: Path) -> None:
    """The unprotected mode (the benchmark's reference) aggregates the same clipped mean."""

    async def run() -> tuple[dict, dict, list]:
        keys, ids = make_keys(tmp_path, 4)
        settings = settings_for(tmp_path, keys, dimension=3000, mode="plaintext", rounds=1)
        rng = np.random.default_rng(3)
        updates = {c: rng.normal(0, 0.6, 3000).astype(np.float32) for c in ids}
        weights = {c: int(rng.integers(1, 50)) for c in ids}
        async with running_server(settings) as server:
            # the baseline opts in to plaintext explicitly (a default client refuses it)
            clients = [client_for(keys, c, server.port, allowed_modes=("plaintext",)) for c in ids]
            results = await asyncio.gather(
                *(cl.run_round(updates[c], weights[c]) for cl, c in zip(clients, ids, strict=True))
            )
            for cl in clients:
                await cl.close()
        return updates, weights, results

    updates, weights, results = asyncio.run(run())
    expected = plain_weighted_mean(updates, weights, clip=1.0)
    for result in results:
        assert result.total_weight == sum(weights.values())
        np.testing.assert_allclose(result.weighted_mean, expected, rtol=0, atol=1e-6)
