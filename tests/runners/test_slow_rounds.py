"""Slow cases (`make test-slow`): many more random schedules, and rounds at real sizes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from fedveil.runners.simulation import Federation, make_config, random_dropouts, run_round
from fedveil.secagg.protocol.stages import Stage
from tests.secagg import test_protocol_properties as properties

pytestmark = pytest.mark.slow


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(properties.rounds())
def test_unmasked_sum_is_exact_many_schedules(case: object) -> None:
    properties.test_unmasked_sum_is_exact_for_survivors.hypothesis.inner_test(case)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("n", "bits"), [(50, 32), (30, 24)])
def test_large_round_with_late_dropouts_is_exact(n: int, bits: int) -> None:
    federation = Federation.enrol(n)
    dimension = 200_000
    config = make_config(federation, dimension, bits=bits, max_weight=100)
    rng = np.random.default_rng(n)
    inputs = {c: rng.normal(0, 0.3, dimension).astype(np.float32) for c in federation.ids}
    weights = {c: int(rng.integers(1, 101)) for c in federation.ids}
    dropouts = random_dropouts(federation.ids, 0.1, rng, (Stage.MASKED_INPUT, Stage.UNMASK))
    report = run_round(config, federation, inputs, weights, dropouts, keep_quantized=True)
    assert report.failure is None, report.failure
    assert report.result is not None
    ring = config.quantization.ring
    expected = ring.zeros(config.element_count)
    for cid in report.result.survivors:
        np.add(expected, report.quantized[cid], out=expected)
    ring.reduce(expected)
    np.testing.assert_array_equal(report.result.ring_sum, expected)
    assert report.masked_input_bytes == -(-config.element_count * bits // 8)
