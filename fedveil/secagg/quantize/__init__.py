"""Clip, scale, round and pack model updates into the modular ring that SecAgg adds in.

The stages compose in one direction: a float update -> `quantize` (clip, fixed point,
stochastic rounding, weight as one more element) -> `pack` (m bits per element on the
wire) -> masking (secagg.protocol) -> ring sum -> `dequantize_sum` (weighted mean with
its error bound).
"""

from fedveil.secagg.quantize.fixed_point import (
    AggregateEstimate,
    QuantizationConfig,
    QuantizedUpdate,
    dequantize_sum,
    error_bound,
    quantize,
)
from fedveil.secagg.quantize.packing import pack, packed_size, unpack
from fedveil.secagg.quantize.ring import Ring, dtype_for_bits

__all__ = [
    "AggregateEstimate",
    "QuantizationConfig",
    "QuantizedUpdate",
    "Ring",
    "dequantize_sum",
    "dtype_for_bits",
    "error_bound",
    "pack",
    "packed_size",
    "quantize",
    "unpack",
]
