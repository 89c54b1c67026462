"""Buffered asynchronous federation (FedBuff) in process, on a simulated clock.

Why a simulated clock: what buffering changes is *when* updates are aggregated, not how
one is computed. Each party takes `durations[name]` simulated seconds per local run
(e.g. its measured step time times a slowdown), all parties train concurrently in
simulated time, and whenever `buffer_size` finished updates wait, one secure round
aggregates exactly those K; its contributors restart from the new global adapter while
the others keep training from the adapter they started with. The real training and the
real secure rounds run one after another in this process, so the run measures learning
against simulated time on any machine, and a slow party's pace is a parameter rather
than a property of the host.

Why the secure round is built per buffer (`round_for(members)`): each buffer is its own
round among the K parties it holds (the service's buffered rounds likewise run among the
first K to advertise). The caller passes e.g. `lambda names: InProcessSecAgg(names, dim,
rounds=1)` from fedveil.runners (the learner may not import runners), or
`lambda names: weighted_mean` for the plaintext reference.

Why the staleness weight is the party's: see learner.federation.staleness; here each
contributor's weight is `staleness.weight(example_count, tau)`, tau = results published
since the adapter it trained from.

Why a finished party waits for its buffer instead of training on: under secure
aggregation an update is not handed to the server and forgotten, its owner must stay
for the whole round (share keys, sign the survivor set, reveal shares), so it can only
start again once its buffer's round is done, from that round's result.

With buffer_size equal to the number of parties this is synchronous FedAvg: every
buffer waits for everyone, the slowest party sets the pace, and every tau is 0. That is
the baseline the benchmark (benchmarks/buffered_bench.py) compares against.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedveil.errors import ConfigError
from fedveil.learner.federated_local import FederatedRun, RoundRecord, check_cohort
from fedveil.learner.federation.staleness import FEDBUFF, StalenessWeight
from fedveil.learner.lora.aggregation import Aggregator, WeightedUpdate
from fedveil.learner.training.party import Party

RoundFor = Callable[[tuple[str, ...]], Aggregator]
"""The secure round for one buffer's members (in the order of the updates passed)."""


@dataclass(frozen=True)
class BufferedConfig:
    """K, each party's simulated seconds per local run, the staleness weight, how many
    buffers to aggregate."""

    buffer_size: int
    durations: Mapping[str, float]
    buffers: int
    staleness: StalenessWeight = FEDBUFF
    until: float | None = None
    """Simulated seconds after which no further buffer is aggregated (None: no limit)."""

    def __post_init__(self) -> None:
        k = self.buffer_size
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"buffer_size must be a positive int, got {k!r}")
        if len(self.durations) < k:
            raise ConfigError(
                f"buffer_size {k} exceeds the {len(self.durations)} parties: no buffer would fill"
            )
        for name, seconds in self.durations.items():
            if not (np.isfinite(seconds) and seconds > 0):
                raise ConfigError(f"party {name!r}: a local run must take > 0 s, got {seconds}")
        if isinstance(self.buffers, bool) or not isinstance(self.buffers, int) or self.buffers < 1:
            raise ConfigError(f"buffers must be a positive int, got {self.buffers!r}")
        if self.until is not None and not self.until > 0:
            raise ConfigError(f"until must be > 0 simulated seconds, got {self.until}")


@dataclass(frozen=True)
class BufferRecord:
    """One aggregated buffer: when (simulated), who, how stale, with what weight."""

    index: int
    time: float
    members: tuple[str, ...]
    staleness: dict[str, int]
    weights: dict[str, int]
    """The staleness-scaled weights the members sent."""
    mean: np.ndarray = field(repr=False)
    """What the secure round returned (the weighted mean of the buffer's deltas)."""


@dataclass(frozen=True, eq=False)
class BufferedRun:
    global_vector: np.ndarray = field(repr=False)
    records: tuple[BufferRecord, ...]

    @property
    def time(self) -> float:
        """Simulated seconds until the last buffer was aggregated."""
        return self.records[-1].time if self.records else 0.0


@dataclass
class _Finished:
    party: Party
    version: int
    update: WeightedUpdate


def run_buffered(
    parties: Sequence[Party],
    config: BufferedConfig,
    round_for: RoundFor,
    on_buffer: Callable[[BufferRecord, np.ndarray], bool | None] | None = None,
) -> BufferedRun:
    """Aggregate `config.buffers` buffers of K updates (fewer past `config.until`);
    `on_buffer(record, global)` runs after each (e.g. to score the new global adapter at
    the record's simulated time) and ends the run by returning True."""
    check_cohort(parties)  # unique names, one layout, one start adapter
    names = [p.name for p in parties]
    if set(names) != set(config.durations):
        raise ConfigError(
            f"durations name {sorted(config.durations)}, the parties are {sorted(names)}"
        )
    global_vector = parties[0].global_vector.copy()
    for party in parties:
        party.global_vector = global_vector.copy()
    version = 0
    started_from = {p.name: 0 for p in parties}
    runs = {p.name: 0 for p in parties}
    clock: list[tuple[float, int, str]] = []  # (finish time, tie-break, party)
    by_name = {p.name: p for p in parties}
    ticket = 0
    for party in parties:
        heapq.heappush(clock, (config.durations[party.name], ticket, party.name))
        ticket += 1
    waiting: list[_Finished] = []
    records: list[BufferRecord] = []
    while len(records) < config.buffers:
        now, _, name = heapq.heappop(clock)
        if config.until is not None and now > config.until:
            break
        party = by_name[name]
        trained = party.train_round(runs[name])
        runs[name] += 1
        waiting.append(_Finished(party, started_from[name], (trained.vector, trained.weight)))
        while len(waiting) >= config.buffer_size and len(records) < config.buffers:
            buffer, waiting = waiting[: config.buffer_size], waiting[config.buffer_size :]
            members = tuple(f.party.name for f in buffer)
            taus = {f.party.name: version - f.version for f in buffer}
            weights = {
                f.party.name: config.staleness.weight(int(f.update[1]), taus[f.party.name])
                for f in buffer
            }
            sent = [(f.update[0], float(weights[f.party.name])) for f in buffer]
            mean = np.asarray(round_for(members)(sent), dtype=np.float64)
            global_vector = (global_vector.astype(np.float64) + mean).astype(np.float32)
            version += 1
            record = BufferRecord(len(records), now, members, taus, weights, mean)
            records.append(record)
            for f in buffer:
                f.party.global_vector = global_vector.copy()
                started_from[f.party.name] = version
                heapq.heappush(clock, (now + config.durations[f.party.name], ticket, f.party.name))
                ticket += 1
            if on_buffer is not None and on_buffer(record, global_vector):
                return BufferedRun(global_vector, tuple(records))
    return BufferedRun(global_vector, tuple(records))


def synchronous_config(
    durations: Mapping[str, float], rounds: int, staleness: StalenessWeight = FEDBUFF
) -> BufferedConfig:
    """The synchronous baseline on the same clock: every round buffers every party."""
    return BufferedConfig(len(durations), durations, rounds, staleness)


def federate_buffered(
    config: BufferedConfig, round_for: RoundFor, records: list[BufferRecord] | None = None
) -> Callable[[list[Party]], FederatedRun]:
    """`compare_local_and_federated(..., federate=...)`: the parties federate in buffers;
    each buffer is reported as one round (its members' staleness-scaled weights, the norm
    of its mean). Losses and update norms stay with the parties, as in a secure round.
    `records` (if given) receives the buffers (simulated times, members, staleness)."""

    def federate(parties: list[Party]) -> FederatedRun:
        started = time.perf_counter()
        run = run_buffered(parties, config, round_for)
        if records is not None:
            records.extend(run.records)
        rounds = tuple(
            RoundRecord(
                round_index=r.index,
                weights=dict(r.weights),
                losses={},
                update_norms={},
                aggregate_norm=float(np.linalg.norm(r.mean)),
                seconds=0.0,
            )
            for r in run.records
        )
        return FederatedRun(
            run.global_vector, parties[0].layout, rounds, time.perf_counter() - started
        )

    return federate
