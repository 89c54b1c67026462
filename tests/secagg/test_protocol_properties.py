"""Property tests: for random cohorts, graphs, thresholds, ring widths and dropout schedules
at every stage, the unmasked sum is the exact ring sum of the survivors' quantised inputs."""

from __future__ import annotations

import hashlib

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fedveil.errors import RingOverflowError, ThresholdNotMetError
from fedveil.runners.simulation import CLIENT_STAGES, Federation, run_round
from fedveil.secagg.protocol.config import RoundConfig
from fedveil.secagg.protocol.consistency import consistency_quorum
from fedveil.secagg.protocol.graph import effective_degree, neighbour_graph
from fedveil.secagg.protocol.stages import Stage
from fedveil.secagg.quantize import QuantizationConfig

_FEDERATIONS: dict[int, Federation] = {}


def federation_of(n: int) -> Federation:
    """Enrolment is the slow part of a round; reuse one federation per size."""
    if n not in _FEDERATIONS:
        _FEDERATIONS[n] = Federation.enrol(n)
    return _FEDERATIONS[n]


@st.composite
def rounds(draw: st.DrawFn) -> tuple[RoundConfig, dict[str, Stage], int]:
    n = draw(st.integers(3, 40))
    k = draw(st.integers(2, n - 1))  # clients refuse k = 1 (a disconnected graph)
    holders = effective_degree(n, k) + 1
    t = draw(st.integers(max(2, holders // 2 + 1), holders))
    bits = draw(st.sampled_from([16, 20, 24, 31, 32, 40, 48, 62]))
    dimension = draw(st.integers(1, 24))
    try:
        quantization = QuantizationConfig(clip=1.0, bits=bits, max_cohort=n, max_weight=50)
    except RingOverflowError:
        assume(False)
    federation = federation_of(n)
    config = RoundConfig(
        round_id=draw(st.integers(0, 2**32)),
        roster=federation.ids,
        threshold=t,
        neighbours=k,
        dimension=dimension,
        quantization=quantization,
        model_hash=hashlib.sha256(b"model").digest(),
    )
    drop_rate = draw(st.sampled_from([0.0, 0.05, 0.2, 0.5]))
    dropouts = {}
    for cid in config.roster:
        if draw(st.floats(0, 1)) < drop_rate:
            dropouts[cid] = draw(st.sampled_from(CLIENT_STAGES))
    return config, dropouts, draw(st.integers(0, 2**32))


def surely_survivable(config: RoundConfig, dropouts: dict[str, Stage]) -> bool:
    """A sufficient condition for success: more than half the roster signs the survivor
    set, every uploader signs it, every closed neighbourhood keeps >= t live members and
    every live client keeps a live neighbour."""
    graph = neighbour_graph(config.roster, config.neighbours, config.session_id)
    gone = set(dropouts)
    signers = [c for c in config.roster if dropouts.get(c, Stage.UNMASK) is Stage.UNMASK]
    if len(signers) < consistency_quorum(config.size):
        return False
    if Stage.CONSISTENCY_CHECK in dropouts.values():
        return False  # uploaded but never signed: its self-mask share is never revealed
    for cid in config.roster:
        live = ({cid} | graph[cid]) - gone
        if len(live) < config.threshold:
            return False
        if cid not in gone and not graph[cid] - gone:
            return False
    return True


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds())
def test_unmasked_sum_is_exact_for_survivors(
    case: tuple[RoundConfig, dict[str, Stage], int],
) -> None:
    config, dropouts, seed = case
    rng = np.random.default_rng(seed)
    inputs = {cid: rng.uniform(-1.5, 1.5, config.dimension) for cid in config.roster}
    weights = {cid: int(rng.integers(1, 51)) for cid in config.roster}
    report = run_round(
        config, federation_of(config.size), inputs, weights, dropouts, keep_quantized=True
    )
    if report.failure is not None:
        assert isinstance(report.failure, ThresholdNotMetError), report.failure
        assert report.final_stage is Stage.FAILED
        assert not surely_survivable(config, dropouts), (
            f"round failed although survivable: {report.failure}"
        )
        return
    assert report.result is not None
    survivors = report.result.survivors
    ring = config.quantization.ring
    expected = ring.zeros(config.element_count)
    for cid in survivors:
        np.add(expected, report.quantized[cid], out=expected)
    ring.reduce(expected)
    np.testing.assert_array_equal(report.result.ring_sum, expected)
    # A client that dropped after uploading still counts; one that dropped before never does.
    assert all(c not in dropouts or dropouts[c] is Stage.UNMASK for c in survivors)
    total = sum(weights[c] for c in survivors)
    est = report.result.estimate
    assert est.total_weight == total
    clipped = {c: np.clip(inputs[c], -1.0, 1.0) for c in survivors}
    exact = sum(weights[c] * clipped[c] for c in survivors) / total
    assert np.max(np.abs(est.weighted_mean - exact)) <= est.error_bound


def test_no_dropouts_always_succeeds() -> None:
    federation = federation_of(12)
    for k in (3, 4, 7, 11):
        holders = effective_degree(12, k) + 1
        config = RoundConfig(
            round_id=1,
            roster=federation.ids,
            threshold=holders // 2 + 1,
            neighbours=k,
            dimension=5,
            quantization=QuantizationConfig(clip=1.0, bits=32, max_cohort=12, max_weight=10),
            model_hash=bytes(32),
        )
        inputs = {c: np.full(5, 0.25) for c in config.roster}
        report = run_round(config, federation, inputs, dict.fromkeys(config.roster, 2))
        assert report.failure is None
        assert report.result is not None
        np.testing.assert_allclose(report.result.estimate.weighted_mean, 0.25, atol=1e-6)


def test_dropping_below_threshold_fails_with_specific_error() -> None:
    federation = federation_of(6)
    config = RoundConfig(
        round_id=1,
        roster=federation.ids,
        threshold=4,
        neighbours=5,
        dimension=3,
        quantization=QuantizationConfig(clip=1.0, bits=32, max_cohort=6, max_weight=10),
        model_hash=bytes(32),
    )
    for stage in CLIENT_STAGES:
        dropouts = dict.fromkeys(config.roster[:3], stage)
        report = run_round(
            config,
            federation,
            {c: np.zeros(3) for c in config.roster},
            dict.fromkeys(config.roster, 1),
            dropouts,
        )
        assert isinstance(report.failure, ThresholdNotMetError), (stage, report.failure)
        assert report.final_stage is Stage.FAILED
        assert report.result is None
