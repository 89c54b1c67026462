"""End-to-end round benchmark: a SecAgg+ round against the plaintext round, over real gRPC.

Why a separate benchmark from secagg_bench.py: that one times the protocol's stages in
one process, with no transport. What a deployment pays is a whole round through the
service: mutual TLS, chunked streaming, the long-poll stage RPCs, the server's journal
and its event loop. The fair reference for that is the same service in its plaintext
mode (`[round] mode = "plaintext"`: float32 updates streamed in the clear through the
same transport, journal and round lifecycle), measured in the same run on the same
machine. The acceptance target (issue 19) is a secagg round <= 1.2x the plaintext round
at every (n, d) of the matrix (it was 1.5x at n=10, d=4e6 before), and a server peak RSS
that grows with d, not with n * d.

Usage: python benchmarks/e2e_bench.py [--quick] [--json OUT] [--repeats R] [--log-dir DIR]
       [--client-processes P]

Matrix (full): n in {10, 50} x d in {1e6, 4e6} x mode in {plaintext, secagg, ckks}.
--quick: n=10, d=1e6, every mode. --modes secagg,ckks picks modes (plaintext always runs).

How one round is measured:

- Keys: the dealer-free flow enrols n clients (once per n, in a temporary folder: a CA
  folder, the server's folder and one folder per client made by its own request; the
  server certificate names localhost and 127.0.0.1). Inputs: float32 N(0, 0.1^2) per client
  (client i's from numpy seeded by (--seed, n, d, i), so a worker process can make its
  own) and weights uniform in [1, 1000] (seeded by (--seed, n, d)), generated once per
  (n, d) before anything is timed and shared by every mode and repetition.
- Server: `python -m fedveil.cli server --config C --keys-dir K --port 0 --state-dir S
  --dimension d --rounds 0 --stage-timeout-s 120 --min-cohort 3 --model-hash H`, where
  C is a TOML file holding only `[round] mode = ...`, started as a SUBPROCESS (so its
  memory is its own), fresh for every repetition with a fresh state folder. Its port is
  parsed from its "fedveil server listening on HOST:PORT" line. `--rounds 0` and SIGTERM after the
  measurement, rather than `--rounds 1`, so the server is certainly alive to be measured
  when the last client has its result (a `--rounds 1` server exits once every result
  was fetched, which races with reading its memory).
- Clients: n AsyncAggregationClients in this process (one event loop), each with its
  own mutual-TLS channel. Before the clock starts every client calls GetRound once, so
  the TLS handshakes are not timed (a long-lived client keeps its channel between
  rounds).
- --client-processes P: the n clients run in P worker processes instead (client i in
  worker i mod P, each worker one event loop), started once per (n, d) with `spawn`.
  Why: real clients quantise and mask on their own machines at the same time, while in
  one process that work is serialised on one core and the secagg round measures it n
  times over; P = 2 lets it use the machine's second core while the server is idle
  (the server still shares the same cores, so this is not n machines). Each worker
  connects its clients and collects garbage, then waits for the parent's start; the
  parent's t0 (time.perf_counter, the system's monotonic clock, common to the
  processes) starts the clock, the last worker's last result stops it. client_cpu_s is
  then the sum over the workers. P = 0 (the default) is the in-process mode above,
  kept for comparison with earlier figures.
- round_s: wall time from the moment all n `run_round` calls start (asyncio.gather)
  until the last one returns: join (GetRound), every stage, the streamed upload and the
  streamed result download. Every time is the MINIMUM over R repetitions (default 2);
  the modes are interleaved per repetition, so machine noise hits both alike.

Fields of each JSON record (one per (mode, n, d); the output is a JSON list):

- mode, n, d; k and t (neighbour degree and Shamir threshold the server published; for
  plaintext t is the quorum and k is 0), bits (ring width m), chunk_bytes;
  client_processes (P, 0 for all clients in the benchmark process).
- round_s: minimum over repetitions; round_s_all: every repetition's time.
- plaintext_round_s: the plaintext round's round_s for the same (n, d) in this run;
  ratio = round_s / plaintext_round_s (1.0 for the plaintext record itself).
- upload_bytes_per_client: bytes one client sent for the round, measured on the wire at
  the protobuf level: a gRPC client interceptor adds up `ByteSize()` of every request
  message the client sends during the timed round (each unary request, and each
  VectorChunk of a streamed upload). HTTP/2 and TLS framing are not counted. The maximum
  over clients is reported; upload_bytes_by_rpc splits that client's bytes per RPC.
- fp32_bytes = 4 * d (the update as plain float32); upload_ratio = upload / fp32.
- server_peak_rss_bytes: the server's VmHWM (peak resident set) from /proc/PID/status,
  read after the last client got its result; the maximum over repetitions.
  server_base_rss_bytes: its VmRSS right after it printed its listening line (imports,
  gRPC, no round data yet); minimum over repetitions.
  server_rss_per_d = server_peak_rss_bytes / d; server_round_rss_per_d =
  (server_peak_rss_bytes - server_base_rss_bytes) / d: the bytes per coordinate the
  round added. If memory grew with n * d, this would grow ~5x from n=10 to n=50.
- server_cpu_s: CPU seconds (user + system, all threads) the server process spent
  between its listening line and the end of the round; client_cpu_s: CPU seconds of
  this process (all n clients and gRPC's threads) during the timed round. With
  cpu_count cores, server_cpu_s + client_cpu_s close to cpu_count * round_s means the
  round is CPU-bound on this machine. Both from the repetition with the smallest round_s.
- phases_s: where the wall time of the fastest repetition went, as seen by the
  clients: for each RPC in round order, the time from the previous RPC's last
  completion (over all clients) to this RPC's last completion. For secagg:
  GetRound (join), AdvertiseKeys, ShareKeys, UploadMaskedInput (includes the clients'
  masking, which runs between the ShareKeys reply and the upload, and the server's
  accumulation and journalling of every chunk), ConfirmSurvivors, Unmask (includes the
  server's unmask), GetResult (the streamed float64 result). For plaintext: GetRound,
  UploadPlaintext, GetResult.
- round_ok: every repetition returned the same survivors (all n), total weight and mean
  (the same SHA-256 of its float64 bytes) to every client, and the first client's mean
  is within the round's error_bound (secagg) or 1e-6 (plaintext) of the exact weighted
  mean of the clipped inputs; max_error is the largest deviation seen; client_retries
  counts transport retries (0 in a healthy round).
- config_wall_s: wall time of the (n, d) configuration, all modes and repetitions.
- machine: cpu_count, cpu_model, aes_ni, platform, python, numpy, cryptography,
  openssl, grpcio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import logging
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from secagg_bench import machine_info, write_json

from fedveil.clients.credentials import ClientCredentials
from fedveil.clients.enrolment import REQUEST_FILE, request_enrolment
from fedveil.clients.transport import AggregateResult, AsyncAggregationClient, TransportSecurity
from fedveil.secagg.modes import parse_mode
from fedveil.secagg.protocol.config import ClientPolicy
from fedveil.server.keys_store import enrol_request, init_federation, load_roster

REPO = Path(__file__).resolve().parent.parent
COHORTS = (10, 50)
DIMENSIONS = (1_000_000, 4_000_000)
# plaintext first: it is every other record's reference
MODES = ("plaintext", "secagg", "ckks")
QUICK = ((10, 1_000_000),)
INPUT_STD = 0.1
MAX_WEIGHT = 1000
CLIP = 1.0
STAGE_TIMEOUT_S = 120.0
MIN_COHORT = 3
# The base model the server and every client hold (each round chains it with its result).
BENCH_MODEL_HASH = hashlib.sha256(b"fedveil-bench-base-model").digest()
SERVER_START_TIMEOUT_S = 60.0
PLAINTEXT_TOLERANCE = 1e-6
RATIO_TARGET = 1.2  # issue 19: every (n, d) of the matrix
LISTENING = re.compile(r"fedveil server listening on (\S+):(\d+)")
ROUND_ORDER = {
    "secagg": (
        "GetRound",
        "AdvertiseKeys",
        "ShareKeys",
        "UploadMaskedInput",
        "ConfirmSurvivors",
        "Unmask",
        "GetResult",
    ),
    "plaintext": ("GetRound", "UploadPlaintext", "GetResult"),
    "ckks": (
        "GetRound",
        "AdvertiseKeys",
        "PublishCkksKeys",
        "FetchCkksKeys",
        "UploadCiphertext",
        "GetResult",
    ),
}


# --- measuring what a client sends ---------------------------------------------------------


class RpcMeter:
    """Request bytes per RPC and when each RPC last completed, for one client."""

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()
        self.ended: dict[str, float] = {}

    def reset(self) -> None:
        self.sent.clear()
        self.ended.clear()

    @staticmethod
    def name(details: grpc.aio.ClientCallDetails) -> str:
        method = details.method
        text = method.decode() if isinstance(method, bytes) else str(method)
        return text.rsplit("/", 1)[-1]

    def add(self, rpc: str, nbytes: int) -> None:
        self.sent[rpc] += nbytes

    def watch(self, rpc: str, call: Any) -> Any:
        call.add_done_callback(lambda _: self.ended.__setitem__(rpc, time.perf_counter()))
        return call

    def count(self, rpc: str, requests: Any) -> Any:
        """Pass a request stream through unchanged, adding up each message's size."""
        if hasattr(requests, "__aiter__"):

            async def counted_async() -> AsyncIterator[Any]:
                async for message in requests:
                    self.add(rpc, message.ByteSize())
                    yield message

            return counted_async()

        def counted() -> Iterator[Any]:
            for message in requests:
                self.add(rpc, message.ByteSize())
                yield message

        return counted()


class _MeterUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, meter: RpcMeter) -> None:
        self.meter = meter

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        rpc = self.meter.name(details)
        self.meter.add(rpc, request.ByteSize())
        return self.meter.watch(rpc, await continuation(details, request))


class _MeterUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, meter: RpcMeter) -> None:
        self.meter = meter

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        rpc = self.meter.name(details)
        self.meter.add(rpc, request.ByteSize())
        return self.meter.watch(rpc, await continuation(details, request))


class _MeterStreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, meter: RpcMeter) -> None:
        self.meter = meter

    async def intercept_stream_unary(
        self, continuation: Any, details: Any, request_iterator: Any
    ) -> Any:
        rpc = self.meter.name(details)
        call = await continuation(details, self.meter.count(rpc, request_iterator))
        return self.meter.watch(rpc, call)


@dataclass(frozen=True)
class MeteredSecurity(TransportSecurity):
    """The SDK's mutual-TLS channel, with the byte-counting interceptors added."""

    meter: RpcMeter | None = field(default=None, repr=False, compare=False)

    def open_channel(self, target: str) -> grpc.aio.Channel:
        assert not self.insecure and self.meter is not None
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem, private_key=self.key_pem, certificate_chain=self.cert_pem
        )
        interceptors = [
            _MeterUnaryUnary(self.meter),
            _MeterUnaryStream(self.meter),
            _MeterStreamUnary(self.meter),
        ]
        return grpc.aio.secure_channel(target, credentials, interceptors=interceptors)


class RetryCounter(logging.Handler):
    """Counts the transport's retry warnings (and keeps its per-client warnings quiet)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.retries = 0
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "retrying" in message:
            self.retries += 1
        elif "PLAINTEXT round" not in message:
            self.errors.append(message)


# --- the server subprocess -----------------------------------------------------------------


def _proc_status(pid: int, key: str) -> int:
    """A `kB` field of /proc/PID/status, in bytes."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/{pid}/status")


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of every thread of PID so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerProcess:
    """`fedveil server` in its own process, on a free loopback port, logging to a file."""

    def __init__(self, work: Path, keys: Path, mode: str, d: int) -> None:
        work.mkdir(parents=True)
        self.log_path = work / "server.log"
        config = work / "server.toml"
        config.write_text(f'[round]\nmode = "{mode}"\n')
        self._stdout_path = work / "stdout.txt"
        command = [
            sys.executable, "-m", "fedveil.cli", "server",
            "--config", str(config),
            "--keys-dir", str(keys),
            "--port", "0",
            "--state-dir", str(work / "state"),
            "--dimension", str(d),
            "--rounds", "0",
            "--stage-timeout-s", str(STAGE_TIMEOUT_S),
            "--min-cohort", str(MIN_COHORT),
            "--model-hash", BENCH_MODEL_HASH.hex(),
        ]  # fmt: skip
        with open(self._stdout_path, "wb") as out, open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=err)
        self.port = self._wait_listening()
        self.base_rss = _proc_status(self.proc.pid, "VmRSS")
        self.base_cpu_s = _proc_cpu_s(self.proc.pid)

    def _wait_listening(self) -> int:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            found = LISTENING.search(self._stdout_path.read_text())
            if found:
                return int(found.group(2))
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(
            f"the server did not start listening (exit {self.proc.returncode}); its log:\n"
            + self.log_path.read_text()[-3000:]
        )

    def peak_rss(self) -> int:
        return _proc_status(self.proc.pid, "VmHWM")

    def cpu_s(self) -> float:
        return _proc_cpu_s(self.proc.pid) - self.base_cpu_s

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- one round -----------------------------------------------------------------------------


@dataclass
class Inputs:
    vectors: list[np.ndarray]  # empty when worker processes make their own
    weights: list[int]
    expected: np.ndarray  # exact float64 weighted mean of the clipped inputs
    total_weight: int


def bench_weights(n: int, d: int, seed: int) -> list[int]:
    rng = np.random.default_rng([seed, n, d])
    return [int(w) for w in rng.integers(1, MAX_WEIGHT + 1, size=n)]


def bench_vector(n: int, d: int, seed: int, index: int) -> np.ndarray:
    """Client `index`'s update: its own generator, so any process can make it alone."""
    x = np.random.default_rng([seed, n, d, index]).standard_normal(d, dtype=np.float32)
    x *= np.float32(INPUT_STD)
    return x


def make_inputs(n: int, d: int, seed: int, *, keep_vectors: bool = True) -> Inputs:
    weights = bench_weights(n, d, seed)
    vectors, total = [], np.zeros(d, dtype=np.float64)
    for index, weight in enumerate(weights):
        x = bench_vector(n, d, seed, index)
        if keep_vectors:
            vectors.append(x)
        total += weight * np.clip(x.astype(np.float64), -CLIP, CLIP)
    total /= sum(weights)
    return Inputs(vectors, weights, total, sum(weights))


@dataclass
class RoundRun:
    round_s: float
    phases_s: dict[str, float]
    upload_bytes: int
    upload_by_rpc: dict[str, int]
    server_peak_rss: int
    server_base_rss: int
    server_cpu_s: float
    client_cpu_s: float
    max_error: float
    ok: bool
    retries: int
    spec: dict[str, int]


@dataclass(frozen=True)
class Outcome:
    """What one client's round returned, in a form a worker process can send back."""

    survivors: tuple[str, ...]
    total_weight: int
    error_bound: float
    mean_sha256: bytes

    @classmethod
    def of(cls, result: AggregateResult) -> Outcome:
        mean = np.ascontiguousarray(result.weighted_mean, dtype="<f8")
        return cls(
            tuple(result.survivors),
            int(result.total_weight),
            float(result.error_bound),
            hashlib.sha256(mean.tobytes()).digest(),
        )


def _check(
    first_mean: np.ndarray, outcomes: Sequence[Outcome], inputs: Inputs, mode: str
) -> tuple[bool, float]:
    """Every client got the same result (same survivors, weight and mean bytes), and the
    first client's mean is within the round's error bound of the exact mean."""
    n = len(inputs.weights)
    first = outcomes[0]
    error = float(np.max(np.abs(first_mean - inputs.expected)))
    bound = PLAINTEXT_TOLERANCE if mode == "plaintext" else first.error_bound
    ok = error <= bound * (1 + 1e-9) and all(
        len(o.survivors) == n
        and o.total_weight == inputs.total_weight
        and o.mean_sha256 == first.mean_sha256
        for o in outcomes
    )
    return ok, error


def _phases(meters: Sequence[RpcMeter], t0: float, t_end: float, mode: str) -> dict[str, float]:
    phases, previous = {}, t0
    for rpc in ROUND_ORDER[mode]:
        ends = [m.ended[rpc] for m in meters if rpc in m.ended]
        if not ends:
            continue
        last = min(max(ends), t_end)
        phases[rpc] = last - previous
        previous = last
    phases["other"] = t_end - previous
    return phases


def make_clients(
    mode: str, port: int, keys: Path, ids: Sequence[str], meters: Sequence[RpcMeter]
) -> list[AsyncAggregationClient]:
    """The clients `ids`, each on its own metered mutual-TLS channel (opened on first use)."""
    roster = load_roster(keys).identities()
    clients = []
    for cid, meter in zip(ids, meters, strict=True):
        creds = ClientCredentials.load(keys.parent / "clients" / cid)
        security = MeteredSecurity(
            ca_pem=creds.ca_pem, cert_pem=creds.cert_pem, key_pem=creds.key_pem, meter=meter
        )
        clients.append(
            AsyncAggregationClient(
                f"127.0.0.1:{port}",
                cid,
                creds.identity,
                roster,
                security,
                base_model_hash=BENCH_MODEL_HASH,
                # the benchmark opts in to the mode it measures, plaintext included
                policy=ClientPolicy(
                    min_cohort=MIN_COHORT,
                    min_threshold=2,
                    allowed_modes=frozenset({parse_mode(mode)}),
                ),
            )
        )
    return clients


@contextlib.contextmanager
def counted_retries() -> Iterator[RetryCounter]:
    counter = RetryCounter()
    transport_log = logging.getLogger("fedveil.clients.transport")
    transport_log.addHandler(counter)
    transport_log.propagate = False
    try:
        yield counter
    finally:
        transport_log.removeHandler(counter)
        transport_log.propagate = True


@dataclass
class ClientsRun:
    """The timed part of one round as seen by one set of clients (one process)."""

    t0: float
    t_end: float
    cpu_s: float
    outcomes: list[Outcome]
    first_mean: np.ndarray
    sent: list[dict[str, int]]
    ended: list[dict[str, float]]
    retries: int
    errors: list[str]
    spec: dict[str, int]


async def _connect(clients: Sequence[AsyncAggregationClient]) -> dict[str, int]:
    """GetRound once per client, so the TLS handshakes are not timed; the round's shape."""
    infos = await asyncio.gather(*(client.get_round() for client in clients))
    spec = infos[0].spec
    return {
        "k": int(spec.neighbours),
        "t": int(spec.threshold),
        "bits": int(spec.quantization.bits),
        "chunk_bytes": int(spec.chunk_bytes),
    }


def _quiesce(meters: Sequence[RpcMeter]) -> None:
    """Forget what connecting sent, and collect garbage now rather than in the round."""
    for meter in meters:
        meter.reset()
    gc.collect()


async def _timed_round(
    clients: Sequence[AsyncAggregationClient],
    meters: Sequence[RpcMeter],
    vectors: Sequence[np.ndarray],
    weights: Sequence[int],
    counter: RetryCounter,
    spec: dict[str, int],
    t0: float | None = None,
) -> ClientsRun:
    """Run every client's round at once; `t0` (the parent's start signal) or now.

    The meters were reset and garbage collected by the caller, just before the start."""
    cpu0 = time.process_time()
    t0 = time.perf_counter() if t0 is None else t0
    results = await asyncio.gather(
        *(client.run_round(x, w) for client, x, w in zip(clients, vectors, weights, strict=True))
    )
    t_end = time.perf_counter()
    cpu = time.process_time() - cpu0
    return ClientsRun(
        t0=t0,
        t_end=t_end,
        cpu_s=cpu,
        outcomes=[Outcome.of(r) for r in results],
        first_mean=np.asarray(results[0].weighted_mean),
        sent=[dict(m.sent) for m in meters],
        ended=[dict(m.ended) for m in meters],
        retries=counter.retries,
        errors=list(counter.errors),
        spec=spec,
    )


async def _in_process(
    mode: str, port: int, keys: Path, ids: Sequence[str], inputs: Inputs
) -> ClientsRun:
    meters = [RpcMeter() for _ in ids]
    clients = make_clients(mode, port, keys, ids, meters)
    try:
        with counted_retries() as counter:
            spec = await _connect(clients)
            _quiesce(meters)
            return await _timed_round(
                clients, meters, inputs.vectors, inputs.weights, counter, spec
            )
    finally:
        for client in clients:
            await client.close()


def run_one_round(
    mode: str,
    n: int,
    d: int,
    keys: Path,
    ids: Sequence[str],
    inputs: Inputs,
    work: Path,
    workers: ClientWorkers | None = None,
) -> RoundRun:
    server = ServerProcess(work, keys, mode, d)
    try:
        if workers is None:
            runs = [asyncio.run(_in_process(mode, server.port, keys, ids, inputs))]
        else:
            runs = workers.run_round(mode, server.port)
        server_cpu = server.cpu_s()
        peak = server.peak_rss()
    finally:
        server.stop()
    t0, t_end = min(r.t0 for r in runs), max(r.t_end for r in runs)
    outcomes = [o for r in runs for o in r.outcomes]
    ok, error = _check(runs[0].first_mean, outcomes, inputs, mode)
    errors = [e for r in runs for e in r.errors]
    if errors:
        ok = False
        print(f"# transport warnings: {errors[:3]}", flush=True)
    meters = []
    for r in runs:
        for sent, ended in zip(r.sent, r.ended, strict=True):
            meter = RpcMeter()
            meter.sent.update(sent)
            meter.ended.update(ended)
            meters.append(meter)
    sizes = [sum(m.sent.values()) for m in meters]
    heaviest = meters[int(np.argmax(sizes))]
    return RoundRun(
        round_s=t_end - t0,
        phases_s=_phases(meters, t0, t_end, mode),
        upload_bytes=max(sizes),
        upload_by_rpc=dict(heaviest.sent),
        server_peak_rss=peak,
        server_base_rss=server.base_rss,
        server_cpu_s=server_cpu,
        client_cpu_s=sum(r.cpu_s for r in runs),
        max_error=error,
        ok=ok,
        retries=sum(r.retries for r in runs),
        spec=runs[0].spec,
    )


# --- clients in worker processes ----------------------------------------------------------


class ClientWorkers:
    """P processes that each run a share of the n clients (clients i with i % P == w).

    Why: real clients quantise and mask on their own machines at the same time; with all
    n in one process that work is serialised on one core. Each worker makes its clients'
    inputs itself (bench_vector), connects them before the clock starts, and starts its
    round when the parent says go, with the parent's t0 (perf_counter is the system's
    monotonic clock, common to the processes); the round ends at the last worker's last
    result. Started with `spawn`: gRPC does not survive a fork.
    """

    def __init__(self, processes: int, n: int, d: int, seed: int, keys: Path, ids: Sequence[str]):
        context = multiprocessing.get_context("spawn")
        self._pipes: list[Any] = []
        self._procs: list[Any] = []
        for w in range(processes):
            mine = list(range(w, n, processes))
            if not mine:
                continue
            parent, child = context.Pipe()
            proc = context.Process(
                target=_worker_main,
                args=(child, n, d, seed, str(keys), [ids[i] for i in mine], mine),
                daemon=True,
            )
            proc.start()
            self._pipes.append(parent)
            self._procs.append(proc)
        for pipe in self._pipes:
            _expect_reply(pipe, "ready")

    def run_round(self, mode: str, port: int) -> list[ClientsRun]:
        for pipe in self._pipes:
            pipe.send(("connect", mode, port))
        for pipe in self._pipes:
            _expect_reply(pipe, "connected")
        gc.collect()
        t0 = time.perf_counter()
        for pipe in self._pipes:
            pipe.send(("go", t0))
        return [_expect_reply(pipe, "done") for pipe in self._pipes]

    def close(self) -> None:
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.send(("exit",))
        for proc in self._procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()


def _expect_reply(pipe: Any, kind: str) -> Any:
    reply = pipe.recv()
    if reply[0] == "error":
        raise RuntimeError(f"a client worker failed:\n{reply[1]}")
    assert reply[0] == kind, reply
    return reply[1] if len(reply) > 1 else None


def _worker_main(
    pipe: Any, n: int, d: int, seed: int, keys: str, ids: list[str], indices: list[int]
) -> None:
    """One worker: make its inputs once, then one round per "connect" ... "go"."""
    try:
        weights = bench_weights(n, d, seed)
        vectors = [bench_vector(n, d, seed, i) for i in indices]
        mine = [weights[i] for i in indices]
        pipe.send(("ready",))
        while True:
            command = pipe.recv()
            if command[0] == "exit":
                return
            _, mode, port = command
            run = asyncio.run(_worker_round(pipe, mode, port, Path(keys), ids, vectors, mine))
            pipe.send(("done", run))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises
        pipe.send(("error", traceback.format_exc()))


async def _worker_round(
    pipe: Any,
    mode: str,
    port: int,
    keys: Path,
    ids: list[str],
    vectors: list[np.ndarray],
    weights: list[int],
) -> ClientsRun:
    meters = [RpcMeter() for _ in ids]
    clients = make_clients(mode, port, keys, ids, meters)
    try:
        with counted_retries() as counter:
            spec = await _connect(clients)
            _quiesce(meters)
            pipe.send(("connected",))
            _, t0 = await asyncio.to_thread(pipe.recv)
            return await _timed_round(clients, meters, vectors, weights, counter, spec, t0)
    finally:
        for client in clients:
            await client.close()


# --- one configuration ---------------------------------------------------------------------


def bench_config(
    n: int,
    d: int,
    keys: Path,
    ids: Sequence[str],
    *,
    repeats: int,
    seed: int,
    scratch: Path,
    log_dir: Path | None,
    machine: Mapping[str, Any],
    modes: Sequence[str] = MODES,
    client_processes: int = 0,
) -> list[dict[str, Any]]:
    wall = time.perf_counter()
    inputs = make_inputs(n, d, seed, keep_vectors=client_processes == 0)
    workers = ClientWorkers(client_processes, n, d, seed, keys, ids) if client_processes else None
    runs: dict[str, list[RoundRun]] = {mode: [] for mode in modes}
    try:
        for repeat in range(repeats):
            for mode in modes:
                work = scratch / f"{mode}-n{n}-d{d}-r{repeat}"
                run = run_one_round(mode, n, d, keys, ids, inputs, work, workers)
                runs[mode].append(run)
                if log_dir is not None:
                    log_dir.mkdir(parents=True, exist_ok=True)
                    (log_dir / f"{work.name}.log").write_bytes((work / "server.log").read_bytes())
                gc.collect()
    finally:
        if workers is not None:
            workers.close()
    del inputs
    gc.collect()
    config_wall = time.perf_counter() - wall
    plain_s = min(r.round_s for r in runs["plaintext"])
    records = []
    for mode in modes:
        best = min(runs[mode], key=lambda r: r.round_s)
        peak = max(r.server_peak_rss for r in runs[mode])
        base = min(r.server_base_rss for r in runs[mode])
        upload = max(r.upload_bytes for r in runs[mode])
        records.append(
            {
                "mode": mode,
                "n": n,
                "d": d,
                "k": best.spec["k"] if mode == "secagg" else 0,
                "t": best.spec["t"],
                "bits": best.spec["bits"] if mode == "secagg" else 32,
                "chunk_bytes": best.spec["chunk_bytes"],
                "repeats": repeats,
                "client_processes": client_processes,
                "round_s": best.round_s,
                "round_s_all": [r.round_s for r in runs[mode]],
                "plaintext_round_s": plain_s,
                "ratio": best.round_s / plain_s,
                "upload_bytes_per_client": upload,
                "upload_bytes_by_rpc": best.upload_by_rpc,
                "fp32_bytes": 4 * d,
                "upload_ratio": upload / (4 * d),
                "server_peak_rss_bytes": peak,
                "server_base_rss_bytes": base,
                "server_rss_per_d": peak / d,
                "server_round_rss_per_d": (peak - base) / d,
                "server_cpu_s": best.server_cpu_s,
                "client_cpu_s": best.client_cpu_s,
                "phases_s": best.phases_s,
                "round_ok": all(r.ok for r in runs[mode]),
                "max_error": max(r.max_error for r in runs[mode]),
                "client_retries": sum(r.retries for r in runs[mode]),
                "config_wall_s": config_wall,
                **machine,
            }
        )
    return records


# --- matrix and table ----------------------------------------------------------------------


COLUMNS = (  # (record field, heading, width, format spec)
    ("mode", "mode", 9, "s"),
    ("n", "n", 3, "d"),
    ("d", "d", 8, "d"),
    ("round_s", "round_s", 8, ".3f"),
    ("plaintext_round_s", "plain_s", 8, ".3f"),
    ("ratio", "ratio", 6, ".2f"),
    ("upload_bytes_per_client", "upload_B", 10, "d"),
    ("upload_ratio", "up/fp32", 7, ".4f"),
    ("server_peak_rss_bytes", "srv_peak_B", 11, "d"),
    ("server_rss_per_d", "rss/d", 6, ".1f"),
    ("server_round_rss_per_d", "+rss/d", 6, ".1f"),
    ("server_cpu_s", "srv_cpu", 7, ".2f"),
    ("client_cpu_s", "cli_cpu", 7, ".2f"),
    ("round_ok", "ok", 5, ""),
)


def table_header() -> str:
    return " ".join(f"{heading:>{width}}" for _, heading, width, _ in COLUMNS)


def table_row(record: Mapping[str, Any]) -> str:
    cells = []
    for name, _, width, spec in COLUMNS:
        value = record[name]
        cells.append(
            f"{value!s:>{width}}" if isinstance(value, bool) else f"{value:>{width}{spec}}"
        )
    phases = " ".join(f"{k}={v:.2f}" for k, v in record["phases_s"].items())
    return " ".join(cells) + f"   [{phases}]"


def matrix(quick: bool) -> list[tuple[int, int]]:
    return list(QUICK) if quick else [(n, d) for n in COHORTS for d in DIMENSIONS]


def acceptance_lines(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The acceptance figures, for whichever of their configurations ran."""
    secagg = {(r["n"], r["d"]): r for r in records if r["mode"] == "secagg"}
    lines = []
    for (n, d), record in sorted(secagg.items()):
        ratio = record["ratio"]
        verdict = "ok" if ratio <= RATIO_TARGET else f"ABOVE {RATIO_TARGET}"
        lines.append(
            f"# acceptance: secagg/plaintext round, n={n} d={d:.0e}: {ratio:.2f} ({verdict})"
        )
    for d in sorted({d for _, d in secagg}):
        if (10, d) in secagg and (50, d) in secagg:
            small, large = (secagg[(n, d)]["server_peak_rss_bytes"] for n in (10, 50))
            lines.append(
                f"# acceptance: secagg server peak RSS at d={d}: n=10 {small / 1e6:.0f} MB, "
                f"n=50 {large / 1e6:.0f} MB (n=50/n=10 = {large / small:.2f}; growth with d "
                "only would keep this near 1)"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n=10, d=1e6 only")
    parser.add_argument(
        "--only",
        action="append",
        default=None,
        metavar="N:D",
        help="run only these (n, d) configurations, e.g. --only 50:1000000 (repeatable)",
    )
    parser.add_argument("--json", type=Path, help="write the JSON list of records here")
    parser.add_argument("--repeats", type=int, default=2, help="rounds per mode (min taken)")
    parser.add_argument("--seed", type=int, default=20240601, help="numpy seed for the inputs")
    parser.add_argument("--log-dir", type=Path, help="keep every server's log in this folder")
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help="comma-separated modes to run; plaintext is always run (the reference)",
    )
    parser.add_argument(
        "--client-processes",
        type=int,
        default=0,
        metavar="P",
        help="run the n clients in P worker processes (0: all in this process, the default)",
    )
    args = parser.parse_args(argv)
    modes = tuple(m for m in MODES if m == "plaintext" or m in args.modes.split(","))
    unknown = set(args.modes.split(",")) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {MODES}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.client_processes < 0:
        parser.error(f"--client-processes must be >= 0, got {args.client_processes}")

    machine = {**machine_info(), "grpcio": grpc.__version__}
    print(
        f"# e2e_bench: {machine['cpu_count']} CPUs ({machine['cpu_model']}), Python "
        f"{machine['python']}, numpy {machine['numpy']}, grpcio {machine['grpcio']}; "
        f"mutual TLS on loopback, repeats={args.repeats} (round_s: minimum; server RSS: "
        "maximum over repeats); clients "
        + (
            f"in {args.client_processes} worker processes"
            if args.client_processes
            else "in this process"
        ),
        flush=True,
    )
    print(table_header(), flush=True)
    records: list[dict[str, Any]] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fedveil-e2e-") as tmp:
        scratch = Path(tmp)
        enrolled: dict[int, tuple[Path, list[str]]] = {}
        chosen = (
            [(int(a), int(b)) for a, b in (item.split(":") for item in args.only)]
            if args.only
            else matrix(args.quick)
        )
        for n, d in chosen:
            if n not in enrolled:
                ids = [f"org-{i:02d}" for i in range(n)]
                keys = scratch / f"keys-{n}" / "server"
                init_federation(keys.parent / "ca", keys, ["localhost", "127.0.0.1"])
                for cid in ids:
                    folder = keys.parent / "clients" / cid
                    request_enrolment(folder, cid)
                    enrol_request(folder / REQUEST_FILE, keys.parent / "ca", keys)
                enrolled[n] = (keys, ids)
            keys, ids = enrolled[n]
            for record in bench_config(
                n,
                d,
                keys,
                ids,
                repeats=args.repeats,
                seed=args.seed,
                scratch=scratch,
                log_dir=args.log_dir,
                machine=machine,
                modes=modes,
                client_processes=args.client_processes,
            ):
                records.append(record)
                print(table_row(record), flush=True)
            if args.json is not None:
                write_json(args.json, records)
    elapsed = time.perf_counter() - start
    print(f"# {len(records)} records in {elapsed:.1f} s", flush=True)
    for line in acceptance_lines(records):
        print(line, flush=True)
    failed = [r for r in records if not r["round_ok"]]
    for r in failed:
        print(f"# FAILED: mode={r['mode']} n={r['n']} d={r['d']}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
