"""Ray backend: n simulated SecAgg+ clients in Ray actors, the real server in the driver.

Why this shape: the protocol's cost at scale is what matters, so both sides are the real
code: each actor holds a shard of real ClientSession objects (runners.client_shard; n /
workers clients each, so a thousand clients are not a thousand processes) and the driver
runs the real in-process ServerRound. Stage by stage the driver asks the server for each
live client's request, sends the actor a batch of them, and feeds the replies to the
server as they come back; a scheduled dropout simply never gets its request, as in
runners.simulation. The masked-input stage goes one client per call, so the driver holds
one masked vector at a time and the server's memory stays O(d + n k).

Why pickling is acceptable here: Ray serialises the arguments and replies with pickle.
Everything that crosses is one of our own frozen protocol dataclasses (messages.py), the
round config, or numpy sums, created by our code on both sides of a process boundary we
started; none of it is input from an untrusted peer. Never route messages received from
a network peer through this backend: the gRPC service parses those from protobuf.

Server memory: tracemalloc in the driver, from just before the ServerRound is built until
its result is decoded, peak minus the level at the start. It counts what the driver's
Python heap holds for the server (its running sum, the relayed envelopes, the decoded
result) plus the reply being fed to it; it cannot see Ray's object store (shared memory
outside the heap), and the shards' sums are fetched only after the measurement stops.

Ray is imported only in this module, and only when a round runs.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import tracemalloc
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedveil.errors import ConfigError, FedveilError
from fedveil.runners.client_shard import ClientShard, ShardReply, ShardTotals
from fedveil.runners.scale_report import ScaleReport, StageTimes, byte_stats, check_exact
from fedveil.runners.scale_setup import (
    ScaleOptions,
    client_ids,
    dropout_schedule,
    round_config,
    still_in,
)
from fedveil.runners.simulation import CLIENT_STAGES, wire_bytes
from fedveil.secagg.crypto.identity import VerifyingIdentity
from fedveil.secagg.protocol.messages import EncryptedShare, MaskedInput, ShareKeysResponse
from fedveil.secagg.protocol.server import ServerRound
from fedveil.secagg.protocol.stages import Stage

logger = logging.getLogger(__name__)

LOCAL_OBJECT_STORE_BYTES = 512 * 2**20
"""Object store of a local Ray: a few masked vectors are in flight at a time, not n."""

LOCAL_START_ATTEMPTS = 3
"""Tries to start a local Ray before giving up (see connect)."""

SMALL_BATCH = 64
"""Clients per actor call in the stages whose messages are O(k) or O(n) bytes."""

IN_FLIGHT = 2
"""Calls outstanding per actor: one being answered, one queued, so no actor waits."""

Progress = Callable[[int], None]


def default_cpus() -> int:
    """A local Ray's CPUs: at most 2 (the shared machines this runs on have 2 cores)."""
    return min(2, os.cpu_count() or 1)


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join the cluster at `address`, or start a local Ray; True if this call started it
    (so the caller shuts it down). An already initialised Ray is reused as it is."""
    import ray

    if address:
        probe(address)
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        return True
    for attempt in range(LOCAL_START_ATTEMPTS):
        try:
            ray.init(
                num_cpus=num_cpus or default_cpus(),
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
                object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            )
            return True
        except Exception as exc:  # Ray raises RuntimeError or a bare Exception here
            # On a loaded machine the local head's GCS can miss Ray's start-up deadline
            # ("Timed out waiting for file .../gcs_server_port", a RuntimeError, or "The
            # current node timed out during startup", a bare Exception); a second start
            # usually succeeds once the first one's processes are gone.
            ray.shutdown()
            if attempt + 1 == LOCAL_START_ATTEMPTS:
                raise ConfigError(f"could not start a local Ray: {exc}") from exc
            logger.warning("a local Ray did not start (%s); trying again", exc)
    return True


def probe(address: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, if a host:port cluster address does not answer: ray.init
    keeps retrying an unreachable address for minutes. "auto" and "local" are Ray's own
    lookups and are left to it."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address must be host:port (or ray://host:port), got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"no Ray cluster answers at {address}: {exc}") from exc


def shutdown() -> None:
    import ray

    ray.shutdown()


def available_cpus() -> int:
    import ray

    return int(ray.cluster_resources().get("CPU", 0))


@dataclass
class _Stats:
    """What the driver records while the round runs."""

    client: dict[str, list[list[float]]] = field(default_factory=dict)
    server: dict[str, float] = field(default_factory=dict)
    upload: dict[str, int] = field(default_factory=dict)
    download: dict[str, int] = field(default_factory=dict)
    refusals: dict[str, str] = field(default_factory=dict)
    masked_input_bytes: int = 0
    envelope_bytes: list[int] = field(default_factory=list)


def _shards(ids: tuple[str, ...], workers: int) -> list[tuple[tuple[str, ...], tuple[int, ...]]]:
    """Contiguous shards of the roster, as even as possible."""
    bounds = np.linspace(0, len(ids), workers + 1).round().astype(int)
    return [
        (ids[lo:hi], tuple(range(lo, hi)))
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
        if hi > lo
    ]


def run_ray_round(
    options: ScaleOptions,
    *,
    workers: int | None = None,
    address: str | None = None,
    progress: Progress | None = None,
) -> ScaleReport:
    """Run one round with the clients in `workers` Ray actors (default: one per CPU of
    the cluster, at most 2 locally) and the server here. Starts a local Ray (or joins
    `address`) unless Ray is already initialised, and shuts down only what it started."""
    import ray

    started = connect(address)
    try:
        cpus = available_cpus()
        workers = workers or max(1, min(cpus, default_cpus() if address is None else cpus))
        if workers > cpus:
            raise ConfigError(f"--workers {workers} exceeds the {cpus} CPUs Ray has")
        workers = min(workers, options.clients)
        actor_class = ray.remote(num_cpus=1)(ClientShard)
        actors: list[Any] = [
            actor_class.remote(shard_ids, indices, options.seed)
            for shard_ids, indices in _shards(client_ids(options.clients), workers)
        ]
        try:
            return _Round(options, actors, ray, progress).run()
        finally:
            for actor in actors:
                ray.kill(actor)
    finally:
        if started:
            shutdown()


class _Round:
    """The driver's side of one round over a list of ClientShard actors."""

    def __init__(
        self, options: ScaleOptions, actors: Sequence[Any], ray: Any, progress: Progress | None
    ) -> None:
        self.options = options
        self.actors = list(actors)
        self.ray = ray
        self.progress = progress or (lambda _: None)
        self.ids = client_ids(options.clients)
        self.config = round_config(options, self.ids)
        self.dropouts = dropout_schedule(options, self.ids)
        self.owner: dict[str, int] = {}
        self.stats = _Stats()

    def run(self) -> ScaleReport:
        ray, start = self.ray, time.perf_counter()
        public = ray.get([actor.enrol.remote() for actor in self.actors])
        roster: dict[str, bytes] = {}
        for index, keys in enumerate(public):
            roster.update(keys)
            self.owner.update(dict.fromkeys(keys, index))
        opened: list[ShardReply] = ray.get(
            [actor.open_round.remote(self.config, roster) for actor in self.actors]
        )
        self.stats.client["setup"] = [list(reply.seconds) for reply in opened]
        for reply in opened:
            self.stats.refusals.update(reply.refusals)
        setup_seconds = time.perf_counter() - start
        identities = {cid: VerifyingIdentity(raw) for cid, raw in roster.items()}
        self.stats.upload = dict.fromkeys(self.ids, 0)
        self.stats.download = dict.fromkeys(self.ids, 0)
        server, peak = self._serve(identities)
        totals: list[ShardTotals] = ray.get([actor.totals.remote() for actor in self.actors])
        return self._report(server, peak, totals, setup_seconds, time.perf_counter() - start)

    def _serve(self, identities: dict[str, VerifyingIdentity]) -> tuple[ServerRound, int]:
        """Run the five stages; return the server and its measured peak bytes."""
        tracing = tracemalloc.is_tracing()
        if not tracing:
            tracemalloc.start()
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        try:
            server = ServerRound(self.config, identities)
            for stage in CLIENT_STAGES:
                if not self._stage(stage, server):
                    break
            peak = tracemalloc.get_traced_memory()[1] - baseline
        finally:
            if not tracing:
                tracemalloc.stop()
        return server, peak

    def _alive(self, cid: str, stage: Stage) -> bool:
        return cid not in self.stats.refusals and still_in(self.dropouts, cid, stage)

    def _stage(self, stage: Stage, server: ServerRound) -> bool:
        """Deliver one stage's requests and replies, then close it; False if it failed."""
        ray, stats = self.ray, self.stats
        senders = self.ids if stage is Stage.ADVERTISE_KEYS else sorted(server.expected_senders())
        queues: list[deque[str]] = [deque() for _ in self.actors]
        for cid in senders:
            if self._alive(cid, stage):
                queues[self.owner[cid]].append(cid)
        self.progress(len(self.ids) - sum(len(q) for q in queues))
        batch = 1 if stage is Stage.MASKED_INPUT else SMALL_BATCH
        times: list[list[float]] = [[] for _ in self.actors]
        server_time = 0.0
        pending: dict[Any, int] = {}
        last: tuple[object | None, int] = (None, 0)

        def submit(index: int) -> None:
            nonlocal server_time, last
            chosen = [queues[index].popleft() for _ in range(min(batch, len(queues[index])))]
            if not chosen:
                return
            requests: list[tuple[str, object | None]] = []
            for cid in chosen:
                request: object | None = None
                if stage is not Stage.ADVERTISE_KEYS:
                    t0 = time.perf_counter()
                    request = server.request_for(cid)
                    server_time += time.perf_counter() - t0
                    # Consistency and unmask requests are the same for everyone: send one
                    # object (pickled once per batch) and size it once.
                    if request == last[0]:
                        request = last[0]
                    else:
                        last = (request, wire_bytes(request))
                    stats.download[cid] += last[1]
                requests.append((cid, request))
            pending[self.actors[index].handle.remote(requests)] = index

        for index in range(len(self.actors)):
            for _ in range(IN_FLIGHT):
                submit(index)
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(ref)
            submit(index)
            reply: ShardReply = ray.get(ref)
            del ref
            times[index].extend(reply.seconds)
            stats.refusals.update(reply.refusals)
            for cid, message in reply.replies:
                stats.upload[cid] += wire_bytes(message)
                self._note(message)
                t0 = time.perf_counter()
                try:
                    server.receive(message)
                except FedveilError as exc:
                    stats.refusals[cid] = f"server rejected its {stage.value} message: {exc}"
                server_time += time.perf_counter() - t0
            self.progress(len(reply.replies) + len(reply.refusals))
            del reply
        t0 = time.perf_counter()
        try:
            server.advance()
        except FedveilError:
            return False
        finally:
            stats.client[stage.value] = times
            stats.server[stage.value] = server_time + time.perf_counter() - t0
        return True

    def _note(self, message: object) -> None:
        """Record the sizes the report quotes: the masked vector and one share envelope."""
        if isinstance(message, MaskedInput):
            self.stats.masked_input_bytes = len(message.payload)
        if isinstance(message, ShareKeysResponse) and message.shares:
            share: EncryptedShare = message.shares[0]
            self.stats.envelope_bytes.append(wire_bytes(share))

    def _report(
        self,
        server: ServerRound,
        peak: int,
        totals: list[ShardTotals],
        setup_seconds: float,
        round_seconds: float,
    ) -> ScaleReport:
        stats, config = self.stats, self.config
        ring = config.quantization.ring
        ring_sum = ring.zeros(config.element_count)
        float_sum = np.zeros(config.dimension, dtype=np.float64)
        contributors: list[str] = []
        for shard in totals:
            np.add(ring_sum, shard.ring_sum, out=ring_sum)
            ring.reduce(ring_sum)
            float_sum += shard.float_sum
            contributors.extend(shard.contributors)
        check = None
        if server.result is not None:
            weight = sum(shard.total_weight for shard in totals)
            check = check_exact(server.result, ring_sum, contributors, float_sum, weight)
        survivors = len(server.result.survivors) if server.result is not None else 0
        return ScaleReport(
            backend="ray",
            n=config.size,
            d=config.dimension,
            k=config.neighbours,
            t=config.threshold,
            bits=config.quantization.bits,
            workers=len(self.actors),
            seed=self.options.seed,
            dropouts={cid: stage.value for cid, stage in sorted(self.dropouts.items())},
            final_stage=server.stage.value,
            failed_at=server.failed_at.value if server.failed_at is not None else None,
            failure=str(server.failure) if server.failure is not None else None,
            survivors=survivors,
            exact=check is not None and check.exact,
            within_bound=check is not None and check.within_bound,
            max_abs_error=check.max_abs_error if check is not None else None,
            error_bound=check.error_bound if check is not None else None,
            round_seconds=round_seconds,
            setup_seconds=setup_seconds,
            client_seconds={name: StageTimes.of(per) for name, per in stats.client.items()},
            server_seconds=dict(stats.server),
            server_peak_bytes=peak,
            server_memory_method=(
                "tracemalloc peak of the driver's Python heap while the ServerRound ran, "
                "minus its level at the start (Ray's object store not included)"
            ),
            upload_bytes=byte_stats(stats.upload),
            download_bytes=byte_stats(stats.download),
            masked_input_bytes=stats.masked_input_bytes,
            envelope_bytes=(
                round(float(np.mean(stats.envelope_bytes))) if stats.envelope_bytes else 0
            ),
            unmask_keystreams=server.unmask_work.keystreams if server.unmask_work else 0,
            plaintext_sum_seconds=sum(shard.plaintext_seconds for shard in totals),
            refusals=dict(sorted(stats.refusals.items())),
            result=server.result,
        )
