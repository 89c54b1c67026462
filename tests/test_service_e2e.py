"""The aggregation service end to end over real gRPC with mutual TLS on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from service_harness import client_for, make_keys, running_server, settings_for


def plain_weighted_mean(updates: dict[str, np.ndarray], weights: dict[str, int], clip: float) -> np.ndarray:
    total = sum(weights.values())
    return sum(weights[c] * np.clip(updates[c], -clip, clip).astype(np.float64) for c in updates) / total


async def run_federation(tmp_path: Path, n: int, d: int, drop: frozenset[str] = frozenset()) -> tuple[dict, dict, dict]:
    keys, ids = make_keys(tmp_path, n)
    settings = settings_for(tmp_path, keys, dimension=d, stage_timeout_s=3.0, rounds=1)
    rng = np.random.default_rng(n)
    updates = {c: rng.normal(0, 0.4, d).astype(np.float32) for c in ids}
    weights = {c: int(rng.integers(1, 500)) for c in ids}
    async with running_server(settings) as server:
        clients = {c: client_for(keys, c, server.port) for c in ids if c not in drop}
        results = await asyncio.gather(*(clients[c].run_round(updates[c], weights[c]) for c in clients))
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
