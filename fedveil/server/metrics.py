"""The server's Prometheus metrics: rounds, stage durations, clients per stage, bytes
received, refused calls and uploads by gRPC status, DP epsilon spent, journal size.

Why a registry per server (not prometheus_client's global one): several servers run in
one test process, and a restarted server must start from its own zero, not inherit the
counters of the last. Why only counts and times: the endpoint is plain HTTP without
authentication (loopback unless the operator binds it elsewhere), so no label carries a
client id, a key or anything from an update; the round id is a number the clients see
anyway. Why gauges are set from the event loop, except the journal's size: the scrape
runs in prometheus_client's HTTP thread and must not iterate the round's live sets while
the loop changes them; the journal size is read from the file system, which is safe from
any thread.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from threading import Thread
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from fedveil.errors import ConfigError
from fedveil.secagg.protocol.stages import Stage
from fedveil.server.status_events import FailureNote, RoundObserver

log = logging.getLogger(__name__)
# Stage durations run from milliseconds (every client answered at once) to the stage
# timeout (60 s by default; local training can make it far longer).
STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
# The journal's SQLite file and its write-ahead log (the WAL holds recent uploads until
# a checkpoint folds them into the main file).
JOURNAL_SUFFIXES = ("", "-wal")


def _method_name(method: str) -> str:
    """'/fedveil.v1.Aggregation/UploadMaskedInput' -> 'UploadMaskedInput'."""
    return method.rsplit("/", 1)[-1]


def stage_label(stage: Stage) -> str:
    """Stage.MASKED_INPUT -> "masked_input": the spelling `fedveil status` prints."""
    return stage.name.lower()


def journal_bytes(path: Path) -> int:
    """Bytes on disk of the journal file and its WAL (0 for a part that does not exist)."""
    total = 0
    for suffix in JOURNAL_SUFFIXES:
        try:
            total += os.stat(f"{path}{suffix}").st_size
        except FileNotFoundError:
            continue
    return total


class ServerMetrics(RoundObserver):
    """Every metric of one server, in its own registry; the coordinator's observer and
    the call guard's hooks feed it."""

    def __init__(self, journal_path: Path) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.rounds_started = Counter(
            "fedveil_rounds_started", "Rounds opened (or resumed after a restart)", registry=r
        )
        self.rounds_finished = Counter(
            "fedveil_rounds_finished", "Rounds ended, by outcome", ["outcome"], registry=r
        )
        self.rounds_failed = Counter(
            "fedveil_rounds_failed",
            "Rounds failed, by the error's class and the stage it failed at",
            ["reason", "stage"],
            registry=r,
        )
        self.stage_seconds = Histogram(
            "fedveil_stage_duration_seconds",
            "Seconds from a stage's opening to its close",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.stage_clients = Gauge(
            "fedveil_stage_clients",
            "Clients that answered the stage, at its last close",
            ["stage"],
            registry=r,
        )
        self.stage_expected = Gauge(
            "fedveil_stage_expected_clients",
            "Clients the stage waited for when it opened, at its last close",
            ["stage"],
            registry=r,
        )
        self.current_round = Gauge(
            "fedveil_current_round", "Id of the round opened last", registry=r
        )
        self.bytes_received = Counter(
            "fedveil_received_bytes",
            "Bytes of request messages received, by RPC method",
            ["method"],
            registry=r,
        )
        self.uploads_rejected = Counter(
            "fedveil_uploads_rejected",
            "Upload streams refused, by gRPC status",
            ["status"],
            registry=r,
        )
        self.calls_refused = Counter(
            "fedveil_calls_refused",
            "Calls refused (any RPC), by method and gRPC status",
            ["method", "status"],
            registry=r,
        )
        self.dp_epsilon = Gauge(
            "fedveil_dp_epsilon_spent",
            "The federation's epsilon over every released DP round of this server",
            registry=r,
        )
        self.journal = Gauge(
            "fedveil_journal_bytes", "Bytes of the SQLite journal file and its WAL", registry=r
        )
        self.journal.set_function(lambda: journal_bytes(journal_path))
        self._http: tuple[WSGIServer, Thread] | None = None

    # --- the coordinator's events --------------------------------------------------------

    def round_opened(self, round_id: int) -> None:
        self.rounds_started.inc()
        self.current_round.set(round_id)

    def stage_closed(
        self, round_id: int, stage: Stage, seconds: float, answered: int, expected: int
    ) -> None:
        label = stage_label(stage)
        self.stage_seconds.labels(label).observe(max(0.0, seconds))
        self.stage_clients.labels(label).set(answered)
        self.stage_expected.labels(label).set(expected)

    def round_ended(self, round_id: int, failure: FailureNote | None) -> None:
        if failure is None:
            self.rounds_finished.labels("done").inc()
            return
        self.rounds_finished.labels("failed").inc()
        stage = stage_label(failure.stage) if failure.stage is not None else "none"
        self.rounds_failed.labels(failure.kind, stage).inc()

    def privacy_spent(self, epsilon: float) -> None:
        self.dp_epsilon.set(epsilon)

    # --- the call guard's hooks ----------------------------------------------------------

    def request_received(self, method: str, size: int) -> None:
        self.bytes_received.labels(_method_name(method)).inc(size)

    def call_refused(self, method: str, code: grpc.StatusCode, upload: bool) -> None:
        self.calls_refused.labels(_method_name(method), code.name).inc()
        if upload:
            self.uploads_rejected.labels(code.name).inc()

    # --- the endpoint ------------------------------------------------------------------

    def serve(self, host: str, port: int) -> int:
        """Serve GET /metrics on host:port (0: any free port); returns the bound port."""
        try:
            self._http = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}); choose "
                "another server.metrics_port or server.metrics_host"
            ) from exc
        bound = int(self._http[0].server_port)
        log.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    def close(self) -> None:
        if self._http is not None:
            server, thread = self._http
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self._http = None
