"""The report of one simulated round at scale, the same for every backend.

Why one shape: `fedveil simulate` prints it, writes it as JSON, and the scale benchmark
fits slopes to it, whether the clients ran in this process (backend "local") or in Ray
actors ("ray"). Times are seconds, sizes bytes; per-stage keys are Stage values plus
"setup" (creating the client sessions, which derives the neighbour graph).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from fedveil.secagg.protocol.messages import RoundResult
from fedveil.secagg.protocol.stages import Stage


@dataclass(frozen=True)
class StageTimes:
    """Client time in one stage: per client (mean, max) and per worker, the busy time of
    the busiest worker and the mean over workers (with one process, the one worker is the
    process and both equal the sum over clients)."""

    clients: int
    mean: float
    max: float
    worker_max: float
    worker_mean: float

    @classmethod
    def of(cls, per_worker: Sequence[Sequence[float]]) -> StageTimes:
        flat = [s for worker in per_worker for s in worker]
        busy = [sum(worker) for worker in per_worker] or [0.0]
        return cls(
            clients=len(flat),
            mean=statistics.fmean(flat) if flat else 0.0,
            max=max(flat, default=0.0),
            worker_max=max(busy),
            worker_mean=statistics.fmean(busy),
        )


@dataclass(frozen=True)
class ExactCheck:
    """Whether the decoded round equals the plaintext computation of its survivors.

    exact: the server's ring sum equals the sum, mod 2^m, of the survivors' quantised
    updates (weight element included), and the survivors are exactly the clients whose
    masked input left. within_bound: the decoded weighted mean is within the round's
    error bound of the float64 weighted mean of the survivors' clipped inputs.
    """

    exact: bool
    within_bound: bool
    max_abs_error: float
    error_bound: float


def check_exact(
    result: RoundResult,
    ring_sum: np.ndarray,
    contributors: Iterable[str],
    float_sum: np.ndarray,
    total_weight: int,
) -> ExactCheck:
    """Compare a round's result with the plaintext sums of the clients that uploaded."""
    same_set = set(contributors) == set(result.survivors)
    exact = same_set and np.array_equal(result.ring_sum, ring_sum)
    est = result.estimate
    if total_weight <= 0:
        return ExactCheck(exact, False, float("inf"), est.error_bound)
    error = float(np.max(np.abs(est.weighted_mean - float_sum / total_weight)))
    return ExactCheck(exact, error <= est.error_bound, error, est.error_bound)


def byte_stats(per_client: Mapping[str, int]) -> dict[str, int]:
    """Median and max over the clients that sent or received anything."""
    values = [b for b in per_client.values() if b]
    if not values:
        return {"median": 0, "max": 0}
    return {"median": int(statistics.median(values)), "max": max(values)}


@dataclass
class ScaleReport:
    """One simulated round: its shape, where it ended, what it cost, whether it is exact."""

    backend: str
    n: int
    d: int
    k: int
    t: int
    bits: int
    workers: int
    seed: int
    dropouts: dict[str, str]
    final_stage: str
    failed_at: str | None
    failure: str | None
    survivors: int
    exact: bool
    within_bound: bool
    max_abs_error: float | None
    error_bound: float | None
    round_seconds: float
    setup_seconds: float
    client_seconds: dict[str, StageTimes]
    server_seconds: dict[str, float]
    server_peak_bytes: int | None
    server_memory_method: str
    upload_bytes: dict[str, int]
    download_bytes: dict[str, int]
    masked_input_bytes: int
    envelope_bytes: int
    unmask_keystreams: int
    plaintext_sum_seconds: float
    refusals: dict[str, str] = field(default_factory=dict)
    result: RoundResult | None = field(default=None, repr=False, compare=False)
    """The decoded round itself (for tests and callers in this process; not in the JSON)."""

    @property
    def done(self) -> bool:
        return self.final_stage == Stage.DONE.value

    @property
    def ok(self) -> bool:
        """The round finished and its result is exact and within its error bound."""
        return self.done and self.exact and self.within_bound

    @property
    def server_total_seconds(self) -> float:
        return sum(self.server_seconds.values())

    def to_json(self) -> dict[str, object]:
        record: dict[str, object] = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name != "result"
        }
        record["client_seconds"] = {s: asdict(t) for s, t in self.client_seconds.items()}
        record["server_total_seconds"] = self.server_total_seconds
        return record

    def summary_line(self) -> str:
        head = (
            f"round {'DONE' if self.done else 'FAILED'} ({self.backend}): n={self.n} "
            f"d={self.d} k={self.k} t={self.t}, {self.survivors}/{self.n} survivors"
        )
        if not self.done:
            return f"{head}; failed at {self.failed_at}: {self.failure}"
        peak = (
            f"{self.server_peak_bytes / 2**20:.1f} MiB"
            if self.server_peak_bytes is not None
            else "n/a"
        )
        return (
            f"{head}, exact={self.exact}, round {self.round_seconds:.2f} s "
            f"(server {self.server_total_seconds:.2f} s, plaintext sum "
            f"{self.plaintext_sum_seconds:.2f} s), server peak {peak}, upload/client "
            f"{self.upload_bytes['median']:,} B"
        )
