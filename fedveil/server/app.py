"""Build and run the grpc.aio server: TLS (mutual by default), health, a per-client call
cap, the operator's status service and (with `metrics_port`) Prometheus metrics, and
reflection only when the `reflection` setting asks for it.

Why TLS is not optional: updates, shares and signatures all cross this channel. The only
way to run without it is the explicit `insecure` setting, which logs a warning at every
start so it cannot go unnoticed in a deployment's logs.

Why health turns NOT_SERVING before anything stops: a load balancer or orchestrator that
probes health must stop sending new clients to a server that is going away while its
calls in flight still finish (the grace period); `RunningServer.stop` flips both health
names first, optionally waits `drain_s` for the probes to notice, then stops.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from fedveil.errors import ConfigError
from fedveil.proto import aggregation_pb2 as pb
from fedveil.proto import aggregation_pb2_grpc as pb_grpc
from fedveil.server.call_guard import CallGuard
from fedveil.server.coordinator import RoundCoordinator
from fedveil.server.journal import RoundJournal
from fedveil.server.keys_store import load_roster, load_server_credentials
from fedveil.server.metrics import ServerMetrics
from fedveil.server.roster import Roster
from fedveil.server.servicer import AggregationServicer
from fedveil.server.settings import ServerSettings
from fedveil.server.status_service import OPERATIONS_NAME, OperationsServicer

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Aggregation"].full_name


@dataclass
class RunningServer:
    """A started server: its bound port and the handles needed to stop it cleanly."""

    server: grpc.aio.Server
    port: int
    coordinator: RoundCoordinator
    journal: RoundJournal
    health: health.aio.HealthServicer
    metrics: ServerMetrics | None = None
    metrics_port: int | None = None

    async def stop(self, grace_s: float = 0.5, drain_s: float = 0.0) -> None:
        """NOT_SERVING first (for "" and the service), `drain_s` for health probes to see
        it while calls are still served, then stop with `grace_s` for calls in flight."""
        await self.health.enter_graceful_shutdown()
        log.info("shutting down: health NOT_SERVING, stopping in %.1f s", drain_s)
        if drain_s > 0:
            await asyncio.sleep(drain_s)
        await self.coordinator.shutdown()
        await self.server.stop(grace_s)
        self.journal.close()
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.close)

    async def wait_for_rounds(self) -> None:
        """Return once the configured number of rounds has run and its results were fetched
        (or a stage timeout passed waiting for them)."""
        await self.coordinator.finished.wait()
        await self.coordinator.drain(self.coordinator.settings.stage_timeout_s)


def _roster_for(settings: ServerSettings, roster: Roster | None) -> Roster:
    if roster is not None:
        return roster
    if settings.keys_dir is None:
        raise ValueError("no roster: give keys_dir or pass a Roster")
    return load_roster(settings.keys_dir)


async def start_server(settings: ServerSettings, roster: Roster | None = None) -> RunningServer:
    """Start listening; the first round opens at once."""
    from_file = settings.keys_dir if roster is None else None
    roster = _roster_for(settings, roster)
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # No BDP probing: HTTP/2 windows stay at their default instead of growing to
        # megabytes per stream, so buffered bytes scale with the chunk size, not with
        # n concurrent uploads times a large window (benchmarks/README.md, e2e_bench).
        ("grpc.http2.bdp_probe", 0),
    ]
    guard = CallGuard(settings.max_calls_per_client, SERVICE_NAME)
    guard.cover(OPERATIONS_NAME)
    server = grpc.aio.server(options=options, interceptors=[guard])
    # The owner's alone (0700; the journal tightens an existing folder and its files).
    Path(settings.state_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    journal_path = Path(settings.state_dir) / "journal.sqlite3"
    journal = RoundJournal(journal_path)
    coordinator = RoundCoordinator(settings.round, roster.identities(), journal)
    metrics: ServerMetrics | None = None
    if settings.metrics_port is not None:
        metrics = ServerMetrics(journal_path)
        coordinator.observer = metrics  # before recover(): a resumed round counts too
        guard.hooks = metrics
    servicer = AggregationServicer(coordinator, roster, insecure=settings.insecure)
    pb_grpc.add_AggregationServicer_to_server(servicer, server)
    operations = OperationsServicer(coordinator, settings.keys_dir, guard.connected)
    pb_grpc.add_OperationsServicer_to_server(operations, server)
    if from_file is not None:
        # Revocation / re-enrolment: the roster file is re-read at every round open.
        roster_dir = from_file
        coordinator.follow_roster(
            lambda: load_roster(roster_dir), lambda fresh: setattr(servicer, "roster", fresh)
        )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.reflection:  # off by default: it lists the whole API to anyone
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                OPERATIONS_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
    address = f"{settings.host}:{settings.port}"
    if settings.insecure:
        log.warning(
            "INSECURE MODE: no TLS, client identities are taken on trust from the messages; "
            "never use this outside a local experiment"
        )
        port = server.add_insecure_port(address)
    else:
        assert settings.keys_dir is not None
        key_pem, cert_pem, ca_pem = load_server_credentials(settings.keys_dir)
        credentials = grpc.ssl_server_credentials(
            [(key_pem, cert_pem)], root_certificates=ca_pem, require_client_auth=True
        )
        port = server.add_secure_port(address, credentials)
    await server.start()
    metrics_port = None
    if metrics is not None:
        assert settings.metrics_port is not None
        try:
            metrics_port = metrics.serve(settings.metrics_host, settings.metrics_port)
        except ConfigError:
            await server.stop(0)
            journal.close()
            raise
    if coordinator.recover() is None:
        coordinator.open_next_round()
    if metrics is not None:  # a DP round released before a restart: its epsilon still counts
        spent = [kept.privacy for kept in coordinator.rounds.values() if kept.privacy]
        if spent:
            metrics.privacy_spent(spent[-1].epsilon)
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "fedveil server listening on %s:%d (%s)",
        settings.host,
        port,
        "INSECURE" if settings.insecure else "mutual TLS",
    )
    return RunningServer(server, port, coordinator, journal, health_servicer, metrics, metrics_port)
