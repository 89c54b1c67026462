"""The Prometheus endpoint, scraped over plain HTTP while real clients run a real round
over the real service (mutual TLS, loopback): the counters must move with what happened,
a refused upload must be counted under its gRPC status, and without --metrics-port
nothing listens."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fedveil.proto import aggregation_pb2 as pb
from fedveil.server.app import RunningServer
from fedveil.server.metrics import ServerMetrics
from tests.helpers.service_harness import (
    client_for,
    make_keys,
    raw_stub,
    running_server,
    settings_for,
)

D = 3000

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """GET /metrics and parse it with prometheus_client's own parser."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode("utf-8")
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape_async(running: RunningServer) -> Samples:
    assert running.metrics_port is not None
    return await asyncio.to_thread(scrape, running.metrics_port)


async def bad_upload(keys: Path, port: int, round_id: int) -> grpc.StatusCode:
    """An enrolled client streams a chunk for a round the server does not know."""
    channel, stub = raw_stub(keys, "org-00", port)

    async def chunks() -> AsyncIterator[pb.VectorChunk]:
        yield pb.VectorChunk(
            round_id=round_id + 99, client_id="org-00", index=0, data=b"x" * 100, total_bytes=100
        )

    try:
        await stub.UploadMaskedInput(chunks(), timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    finally:
        await channel.close()
    raise AssertionError("the bad upload was accepted")


def test_counters_move_with_a_real_round_and_a_refused_upload(tmp_path: Path) -> None:
    keys, ids = make_keys(tmp_path, 3)
    settings = settings_for(tmp_path, keys, dimension=D, rounds=1).replace(metrics_port=0)
    rng = np.random.default_rng(3)
    updates = {c: rng.normal(0, 0.3, D).astype(np.float32) for c in ids}

    async def scenario() -> tuple[Samples, Samples, grpc.StatusCode]:
        async with running_server(settings) as running:
            before = await scrape_async(running)
            assert running.coordinator.current is not None
            code = await bad_upload(keys, running.port, running.coordinator.current.round_id)
            clients = [client_for(keys, c, running.port) for c in ids]
            await asyncio.gather(*(cl.run_round(updates[cl.client_id], 5) for cl in clients))
            for cl in clients:
                await cl.close()
            after = await scrape_async(running)
        return before, after, code

    before, after, code = asyncio.run(scenario())
    assert code is grpc.StatusCode.NOT_FOUND
    # before the round: one round opened, nothing received, no stage closed
    assert value(before, "fedveil_rounds_started_total") == 1
    assert value(before, "fedveil_rounds_finished_total", outcome="done") == 0
    assert value(before, "fedveil_received_bytes_total", method="UploadMaskedInput") == 0
    assert value(before, "fedveil_uploads_rejected_total", status="NOT_FOUND") == 0
    # after: the round is done, its bytes and stage times are counted
    assert value(after, "fedveil_rounds_started_total") == 1
    assert value(after, "fedveil_rounds_finished_total", outcome="done") == 1
    assert value(after, "fedveil_current_round") >= 1
    uploaded = value(after, "fedveil_received_bytes_total", method="UploadMaskedInput")
    assert uploaded >= 3 * D * 4  # three masked uploads of at least 4 bytes per value
    assert value(after, "fedveil_received_bytes_total", method="AdvertiseKeys") > 0
    for stage in ("advertise_keys", "share_keys", "masked_input", "consistency_check", "unmask"):
        assert value(after, "fedveil_stage_duration_seconds_count", stage=stage) == 1, stage
        assert value(after, "fedveil_stage_clients", stage=stage) == 3, stage
        assert value(after, "fedveil_stage_expected_clients", stage=stage) == 3, stage
    # the refused upload, under its status, and as a refused call of its method
    assert value(after, "fedveil_uploads_rejected_total", status="NOT_FOUND") == 1
    assert (
        value(after, "fedveil_calls_refused_total", method="UploadMaskedInput", status="NOT_FOUND")
        == 1
    )
    assert value(after, "fedveil_journal_bytes") > 0
    assert (
        value(
            after,
            "fedveil_rounds_failed_total",
            reason="ThresholdNotMetError",
            stage="advertise_keys",
        )
        == 0
    )


def test_a_failed_round_is_counted_with_its_reason(tmp_path: Path) -> None:
    """One client of three joins; the key stage's deadline passes; the round fails."""
    keys, ids = make_keys(tmp_path, 3)
    settings = settings_for(tmp_path, keys, dimension=D, rounds=1, stage_timeout_s=1.0).replace(
        metrics_port=0
    )

    async def scenario() -> Samples:
        async with running_server(settings) as running:
            lone = client_for(keys, ids[0], running.port)
            with pytest.raises(Exception):  # noqa: B017 - the SDK's failure, any class
                await lone.run_round(np.zeros(D, np.float32), 1)
            await lone.close()
            await asyncio.wait_for(running.coordinator.finished.wait(), 10)
            return await scrape_async(running)

    after = asyncio.run(scenario())
    failed = {k: v for k, v in after.items() if k[0] == "fedveil_rounds_failed_total"}
    assert sum(failed.values()) == 1, failed
    ((_, labels),) = failed
    assert dict(labels)["stage"] == "advertise_keys"
    assert dict(labels)["reason"].endswith("Error")
    assert value(after, "fedveil_rounds_finished_total", outcome="failed") == 1
    assert value(after, "fedveil_rounds_finished_total", outcome="done") == 0
    assert value(after, "fedveil_stage_clients", stage="advertise_keys") == 1


def test_metrics_are_off_by_default_and_each_server_has_its_own_registry(tmp_path: Path) -> None:
    keys, _ = make_keys(tmp_path, 3)

    async def scenario() -> None:
        async with running_server(settings_for(tmp_path / "a", keys)) as plain:
            assert plain.metrics is None and plain.metrics_port is None
        one = ServerMetrics(tmp_path / "a.sqlite3")
        two = ServerMetrics(tmp_path / "b.sqlite3")
        one.round_opened(4)
        assert one.registry.get_sample_value("fedveil_rounds_started_total") == 1
        assert two.registry.get_sample_value("fedveil_rounds_started_total") == 0

    asyncio.run(scenario())


def test_dp_epsilon_spent_follows_the_released_round(tmp_path: Path) -> None:
    """A client-level DP round: the gauge is 0 before and the result's epsilon after."""
    keys, ids = make_keys(tmp_path, 3)
    settings = settings_for(
        tmp_path, keys, dimension=64, rounds=1, dp="client", dp_noise_multiplier=1.0
    ).replace(metrics_port=0)

    async def scenario() -> tuple[Samples, Samples, float]:
        async with running_server(settings) as running:
            before = await scrape_async(running)
            clients = [client_for(keys, c, running.port) for c in ids]
            results = await asyncio.gather(
                *(cl.run_round(np.full(64, 0.01, np.float32), 1) for cl in clients)
            )
            for cl in clients:
                await cl.close()
            after = await scrape_async(running)
        assert results[0].privacy is not None
        return before, after, float(results[0].privacy.epsilon)

    before, after, epsilon = asyncio.run(scenario())
    assert value(before, "fedveil_dp_epsilon_spent") == 0
    assert epsilon > 0
    assert value(after, "fedveil_dp_epsilon_spent") == pytest.approx(epsilon)
