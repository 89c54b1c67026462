"""Health turns NOT_SERVING when a shutdown starts, before the server stops serving.

Why it matters: an orchestrator or load balancer that probes gRPC health must stop
routing new clients to a server that is going away, while the calls already in flight
finish. Checked with real health calls over mutual TLS: in process (a Watch stream sees
the flip, and a Check during the drain answers NOT_SERVING for "" and the service), and
through `fedveil server` itself, stopped with SIGTERM.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedveil.server.app import SERVICE_NAME, start_server
from fedveil.server.keys_store import client_dir
from tests.helpers.service_harness import (
    BASE_MODEL_HASH,
    enrol_federation,
    enrolled_client_dir,
    make_keys,
    settings_for,
)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
LISTENING = re.compile(r"fedveil server listening on \S+:(\d+)")
METRICS = re.compile(r"metrics on (http://\S+/metrics)")


def _credentials(folder: Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=(folder / "ca.pem").read_bytes(),
        private_key=(folder / "client.key").read_bytes(),
        certificate_chain=(folder / "client.pem").read_bytes(),
    )


async def _check(stub: health_pb2_grpc.HealthStub, service: str) -> int:
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(reply.status)


def test_health_is_not_serving_from_the_start_of_a_shutdown(tmp_path: Path) -> None:
    keys, _ = make_keys(tmp_path, 3)

    async def scenario() -> tuple[list[int], list[int], list[int], grpc.StatusCode]:
        running = await start_server(settings_for(tmp_path, keys))
        channel = grpc.aio.secure_channel(
            f"localhost:{running.port}", _credentials(client_dir(keys, "org-00"))
        )
        stub = health_pb2_grpc.HealthStub(channel)
        before = [await _check(stub, ""), await _check(stub, SERVICE_NAME)]
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""))
        seen = [int((await watch.read()).status)]
        stopping = asyncio.ensure_future(running.stop(grace_s=0.2, drain_s=2.0))
        seen.append(int((await asyncio.wait_for(watch.read(), 5)).status))
        during = [await _check(stub, ""), await _check(stub, SERVICE_NAME)]
        assert not stopping.done()  # these answers came while it was still draining
        await stopping
        try:
            await _check(stub, "")
            after = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            after = exc.code()
        await channel.close()
        return before, seen, during, after

    before, seen, during, after = asyncio.run(scenario())
    assert before == [SERVING, SERVING]
    assert seen == [SERVING, NOT_SERVING]
    assert during == [NOT_SERVING, NOT_SERVING]
    assert after is grpc.StatusCode.UNAVAILABLE


def test_fedveil_server_reports_not_serving_on_sigterm(tmp_path: Path) -> None:
    """The CLI's stop path: SIGTERM flips health during --shutdown-drain-s, then exits 0.
    Its --metrics-port endpoint answers while it runs."""
    ids = ["org-00", "org-01", "org-02"]
    server_dir = enrol_federation(tmp_path, ids)
    command = [
        sys.executable, "-m", "fedveil.cli", "server",
        "--keys-dir", str(server_dir), "--state-dir", str(tmp_path / "state"),
        "--port", "0", "--dimension", "100", "--model-hash", BASE_MODEL_HASH.hex(),
        "--metrics-port", "0", "--shutdown-drain-s", "3",
    ]  # fmt: skip
    out = tmp_path / "server.out"
    with open(out, "wb") as stdout:
        proc = subprocess.Popen(command, stdout=stdout, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (found := LISTENING.search(out.read_text())) or not METRICS.search(
            out.read_text()
        ):
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        port = int(found.group(1))
        metrics_url = METRICS.search(out.read_text())
        assert metrics_url is not None
        with urllib.request.urlopen(metrics_url.group(1), timeout=10) as response:
            assert b"fedveil_rounds_started_total 1.0" in response.read()

        async def probe() -> tuple[int, int]:
            folder = enrolled_client_dir(server_dir, "org-00")
            async with grpc.aio.secure_channel(
                f"localhost:{port}", _credentials(folder)
            ) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                first = await _check(stub, SERVICE_NAME)
                proc.send_signal(signal.SIGTERM)
                for _ in range(100):
                    status = await _check(stub, SERVICE_NAME)
                    if status != SERVING:
                        break
                    await asyncio.sleep(0.02)
                return first, status

        first, then = asyncio.run(probe())
        assert (first, then) == (SERVING, NOT_SERVING)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
