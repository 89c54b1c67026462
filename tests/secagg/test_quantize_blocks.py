"""Block-wise quantisation is the whole-vector algorithm, element for element.

quantize() works a cache-sized block at a time (values, their uniforms, their levels);
these tests hold it to the straightforward whole-vector pass on the same rounding seed,
over lengths that end mid-block, and the uniform stream to the one-shot PRG.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedveil.secagg.crypto import prg
from fedveil.secagg.quantize import fixed_point
from fedveil.secagg.quantize.fixed_point import QuantizationConfig, quantize

SEED = bytes(range(32))


def _whole_vector(update: np.ndarray, weight: int, config: QuantizationConfig) -> np.ndarray:
    """The reference: clip, scale, floor + [u < frac] over the whole vector at once."""
    x = np.clip(update.astype(np.float64), -config.clip, config.clip)
    x *= float(weight) * config.effective_scale
    rounded = np.floor(x)
    rounded += prg.uniform_unit_interval(SEED, x.shape[0]) < (x - rounded)
    levels = np.clip(rounded.astype(np.int64), -config.level_cap, config.level_cap)
    values = config.ring.zeros(x.shape[0] + 1)
    values[:-1] = config.ring.from_signed(levels)
    values[-1] = weight
    return values


@pytest.mark.parametrize("bits", [24, 32, 62])
@pytest.mark.parametrize(
    "d", [1, 7, fixed_point.QUANTIZE_BLOCK, 3 * fixed_point.QUANTIZE_BLOCK + 17]
)
def test_blockwise_quantize_equals_the_whole_vector_pass(bits: int, d: int) -> None:
    config = QuantizationConfig(clip=1.0, bits=bits, max_cohort=64, max_weight=100)
    update = np.random.default_rng(d).normal(0, 0.6, d)  # some values beyond the clip
    quantized = quantize(update, 17, config, rounding_seed=SEED)
    np.testing.assert_array_equal(quantized.values, _whole_vector(update, 17, config))
    assert quantized.clipped_count == int(np.count_nonzero(np.abs(update) > config.clip))


def test_the_uniform_stream_concatenates_to_the_one_shot_sequence() -> None:
    stream = prg.UniformStream(SEED, 1000)
    parts = [stream.next(n).copy() for n in (1000, 3, 998, 0, 1000)]
    np.testing.assert_array_equal(np.concatenate(parts), prg.uniform_unit_interval(SEED, 3001))
    with pytest.raises(Exception, match="count must be in"):
        stream.next(1001)
