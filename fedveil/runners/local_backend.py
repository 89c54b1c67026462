"""Local backend: the same round as the Ray backend, in one process (runners.simulation).

Why it exists: `fedveil simulate --backend local` must mean the existing one-process
simulation (run_round), reported in the same shape as the Ray backend so the two can be
compared. Inputs, weights, roster and dropouts come from runners.scale_setup and
runners.client_shard, so for one seed both backends run the same round.

No server peak memory is reported here: the clients share the process (run_round holds
every client's quantised update at once), so the server's share cannot be separated.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping

import numpy as np

from fedveil.runners.client_shard import client_input, client_weight
from fedveil.runners.scale_report import ScaleReport, StageTimes, byte_stats, check_exact
from fedveil.runners.scale_setup import ScaleOptions, dropout_schedule
from fedveil.runners.simulation import Federation, make_config, run_round


class _SeededInputs(Mapping[str, np.ndarray]):
    """Each client's input, generated when run_round asks for it (never all at once)."""

    def __init__(self, ids: tuple[str, ...], seed: int, dimension: int) -> None:
        self._index = {cid: i for i, cid in enumerate(ids)}
        self._seed, self._dimension = seed, dimension

    def __getitem__(self, cid: str) -> np.ndarray:
        return client_input(self._seed, self._index[cid], self._dimension)

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


def run_local_round(options: ScaleOptions) -> ScaleReport:
    """Run one round in this process with run_round and report it."""
    start = time.perf_counter()
    federation = Federation.enrol(options.clients)
    ids = federation.ids
    config = make_config(
        federation,
        options.dimension,
        neighbours=options.neighbours,
        threshold=options.threshold,
        bits=options.bits,
        clip=options.clip,
        max_weight=options.max_weight,
    )
    inputs = _SeededInputs(ids, options.seed, options.dimension)
    weights = {cid: client_weight(options.seed, i, options.max_weight) for i, cid in enumerate(ids)}
    dropouts = dropout_schedule(options, ids)
    setup_seconds = time.perf_counter() - start
    report = run_round(config, federation, inputs, weights, dropouts, keep_quantized=True)
    check = None
    plaintext_seconds = 0.0
    if report.result is not None:
        ring = config.quantization.ring
        ring_sum = ring.zeros(config.element_count)
        float_sum = np.zeros(config.dimension, dtype=np.float64)
        survivors = report.result.survivors
        for cid in survivors:
            np.add(ring_sum, report.quantized[cid], out=ring_sum)
            ring.reduce(ring_sum)
            update = inputs[cid]
            t0 = time.perf_counter()
            float_sum += weights[cid] * np.clip(update, -options.clip, options.clip).astype(
                np.float64
            )
            plaintext_seconds += time.perf_counter() - t0
        weight = sum(weights[c] for c in survivors)
        check = check_exact(report.result, ring_sum, survivors, float_sum, weight)
    return ScaleReport(
        backend="local",
        n=config.size,
        d=config.dimension,
        k=config.neighbours,
        t=config.threshold,
        bits=config.quantization.bits,
        workers=1,
        seed=options.seed,
        dropouts={cid: stage.value for cid, stage in sorted(dropouts.items())},
        final_stage=report.final_stage.value,
        failed_at=report.failed_at.value if report.failed_at is not None else None,
        failure=str(report.failure) if report.failure is not None else None,
        survivors=len(report.result.survivors) if report.result is not None else 0,
        exact=check is not None and check.exact,
        within_bound=check is not None and check.within_bound,
        max_abs_error=check.max_abs_error if check is not None else None,
        error_bound=check.error_bound if check is not None else None,
        round_seconds=time.perf_counter() - start,
        setup_seconds=setup_seconds,
        client_seconds={
            stage: StageTimes.of([times]) for stage, times in report.client_seconds.items()
        },
        server_seconds=dict(report.server_seconds),
        server_peak_bytes=None,
        server_memory_method="not measured: the clients share the process",
        upload_bytes=byte_stats(report.upload_bytes),
        download_bytes=byte_stats(report.download_bytes),
        masked_input_bytes=report.masked_input_bytes,
        envelope_bytes=0,
        unmask_keystreams=report.unmask_keystreams,
        plaintext_sum_seconds=plaintext_seconds,
        refusals={cid: str(exc) for cid, exc in sorted(report.refusals.items())},
        result=report.result,
    )
