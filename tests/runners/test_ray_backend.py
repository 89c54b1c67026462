"""The Ray backend runs real ClientSessions in Ray actors against the real ServerRound.

One local Ray (2 CPUs, 2 actors per round) serves the whole module: starting Ray costs
seconds. Rounds are small (n = 12, d = 1000) so the module stays well under a minute.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import numpy as np
import pytest

pytest.importorskip("ray")

from fedveil.runners import ray_backend  # noqa: E402
from fedveil.runners.client_shard import client_input  # noqa: E402
from fedveil.runners.scale_report import ScaleReport  # noqa: E402
from fedveil.runners.scale_setup import SURVIVABLE_STAGES, ScaleOptions  # noqa: E402
from fedveil.runners.simulation import CLIENT_STAGES  # noqa: E402
from fedveil.secagg.protocol.stages import Stage  # noqa: E402

N, D = 12, 1000


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    started = ray_backend.connect(num_cpus=2)
    yield
    if started:
        ray_backend.shutdown()


def _round(
    drop: float = 0.0,
    stages: tuple[Stage, ...] = SURVIVABLE_STAGES,
    workers: int = 2,
    progress: Callable[[int], None] | None = None,
) -> ScaleReport:
    options = ScaleOptions(clients=N, dimension=D, drop=drop, drop_stages=stages, seed=7)
    return ray_backend.run_ray_round(options, workers=workers, progress=progress)


def test_round_without_dropouts_is_exact_and_reports_every_stage() -> None:
    ticks: list[int] = []
    report = _round(progress=ticks.append)
    assert report.ok and report.exact and report.within_bound
    assert report.backend == "ray" and report.workers == 2
    assert report.survivors == N and not report.dropouts and not report.refusals
    stages = [s.value for s in CLIENT_STAGES]
    assert list(report.server_seconds) == stages
    assert set(report.client_seconds) == {"setup", *stages}
    assert all(report.client_seconds[s].clients == N for s in stages)
    assert report.masked_input_bytes == 4 * (D + 1)
    assert report.upload_bytes["median"] > report.masked_input_bytes
    assert report.download_bytes["median"] > 0 and report.envelope_bytes > 0
    # The server holds at least its ring sum; nothing near n copies of the vector.
    assert 4 * (D + 1) < (report.server_peak_bytes or 0) < 64 * 2**20
    assert "tracemalloc" in report.server_memory_method
    assert report.round_seconds >= report.setup_seconds > 0
    assert report.unmask_keystreams == N
    assert sum(ticks) == len(CLIENT_STAGES) * N
    record = json.loads(json.dumps(report.to_json()))
    assert record["exact"] is True and "result" not in record
    assert record["client_seconds"]["masked-input"]["clients"] == N


@pytest.mark.parametrize("stage", SURVIVABLE_STAGES, ids=lambda s: s.value)
def test_dropouts_at_each_survivable_stage_keep_the_sum_exact(stage: Stage) -> None:
    report = _round(drop=0.25, stages=(stage,))
    assert report.ok, report.failure
    assert set(report.dropouts.values()) == {stage.value} and len(report.dropouts) == 3
    # Leaving before unmasking still leaves the upload in the sum.
    assert report.survivors == (N if stage is Stage.UNMASK else N - 3)


def test_dropout_after_upload_before_signing_fails_closed() -> None:
    report = _round(drop=0.1, stages=(Stage.CONSISTENCY_CHECK,))
    assert not report.done and not report.ok and not report.exact
    assert report.failed_at == Stage.CONSISTENCY_CHECK.value
    assert "did not sign" in (report.failure or "")


def test_a_client_dropped_before_masked_input_is_not_in_the_sum() -> None:
    report = _round(drop=0.25, stages=(Stage.MASKED_INPUT,))
    assert report.ok and report.result is not None
    dropped = set(report.dropouts)
    survivors = report.result.survivors
    assert dropped and not dropped & set(survivors)
    index = {f"client-{i:02d}": i for i in range(N)}
    mean = np.mean([client_input(7, index[c], D).astype(np.float64) for c in survivors], axis=0)
    bound = report.result.estimate.error_bound
    decoded = report.result.estimate.weighted_mean
    assert np.max(np.abs(decoded - mean)) <= bound
    with_dropped = np.mean(
        [client_input(7, index[c], D).astype(np.float64) for c in (*survivors, *dropped)], axis=0
    )
    assert np.max(np.abs(decoded - with_dropped)) > 100 * bound


def test_too_many_workers_for_the_cluster_is_a_config_error() -> None:
    from fedveil.errors import ConfigError

    with pytest.raises(ConfigError, match="exceeds"):
        _round(workers=64)
