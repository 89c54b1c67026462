"""m-bit wire packing: exact layout, exact size, exact inverse, strict parsing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedveil.errors import ConfigError, InvalidMessageError
from fedveil.secagg.quantize import dtype_for_bits, pack, packed_size, unpack

COUNTS = st.one_of(st.sampled_from([0, 1, 2, 63, 64, 65, 127, 128, 129]), st.integers(0, 700))


def _reference_pack(values: np.ndarray, bits: int) -> bytes:
    """The layout by definition: value i at stream bits [i*bits, (i+1)*bits), LSB first."""
    stream = 0
    for i, v in enumerate(values.tolist()):
        stream |= int(v) << (i * bits)
    return stream.to_bytes(packed_size(len(values), bits), "little")


def _random_values(seed: int, count: int, bits: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 2**63, size=count, dtype=np.uint64) * np.uint64(2) + rng.integers(
        0, 2, size=count, dtype=np.uint64
    )
    if bits < 64:
        raw &= np.uint64((1 << bits) - 1)
    return raw.astype(dtype_for_bits(bits))


@settings(max_examples=200, deadline=None)
@given(bits=st.integers(1, 64), count=COUNTS, seed=st.integers(0, 2**32 - 1))
def test_round_trip_size_and_layout(bits: int, count: int, seed: int) -> None:
    values = _random_values(seed, count, bits)
    payload = pack(values, bits)
    assert isinstance(payload, bytes)
    assert len(payload) == packed_size(count, bits) == -(-count * bits // 8)
    assert payload == _reference_pack(values, bits)
    out = unpack(payload, bits, count)
    assert out.dtype == dtype_for_bits(bits)
    np.testing.assert_array_equal(out, values)


@pytest.mark.parametrize("bits", [1, 7, 8, 12, 16, 23, 24, 31, 32, 33, 48, 61, 62, 63, 64])
@pytest.mark.parametrize("count", [0, 1, 63, 64, 65, 1000])
def test_extreme_values_round_trip(bits: int, count: int) -> None:
    top = (1 << bits) - 1
    values = np.array([top if i % 3 else 0 for i in range(count)], dtype=np.uint64)
    values = values.astype(dtype_for_bits(bits))
    payload = pack(values, bits)
    assert payload == _reference_pack(values, bits)
    np.testing.assert_array_equal(unpack(payload, bits, count), values)


def test_known_answer_12_bits() -> None:
    # 0x001 | 0x002 << 12 | 0x003 << 24 = 0x003002001, 36 bits -> 5 bytes little-endian.
    assert pack(np.array([1, 2, 3], dtype=np.uint32), 12) == bytes([0x01, 0x20, 0x00, 0x03, 0x00])


def test_wire_is_m_bits_not_words() -> None:
    count = 10_001
    values = np.zeros(count, dtype=np.uint32)
    assert len(pack(values, 24)) == 30_003
    assert len(pack(values, 17)) == packed_size(count, 17) == 21_253
    assert len(pack(values.astype(np.uint64), 40)) == 50_005


def test_accepts_other_integer_dtypes() -> None:
    values = np.array([0, 5, 1023], dtype=np.int64)
    assert unpack(pack(values, 10), 10, 3).tolist() == [0, 5, 1023]
    assert unpack(pack(values.astype(np.uint16), 16), 16, 3).tolist() == [0, 5, 1023]


@pytest.mark.parametrize("delta", [-1, 1, 8])
def test_wrong_payload_length_is_invalid_message(delta: int) -> None:
    payload = pack(np.arange(100, dtype=np.uint32), 20)
    bad = payload[:delta] if delta < 0 else payload + bytes(delta)
    with pytest.raises(InvalidMessageError) as info:
        unpack(bad, 20, 100)
    message = str(info.value)
    assert f"{len(bad)} bytes" in message and "expected 250" in message
    assert "100 values" in message and "20 bits" in message
    assert info.value.grpc_status == "INVALID_ARGUMENT"


def test_empty_payload_for_nonzero_count_is_invalid() -> None:
    with pytest.raises(InvalidMessageError):
        unpack(b"", 32, 1)


@pytest.mark.parametrize(("bits", "count"), [(12, 1), (20, 3), (61, 5), (1, 3)])
def test_nonzero_padding_is_invalid_message(bits: int, count: int) -> None:
    payload = bytearray(pack(np.zeros(count, dtype=dtype_for_bits(bits)), bits))
    payload[-1] |= 0x80  # the top bit of the last byte is padding for these shapes
    with pytest.raises(InvalidMessageError, match="padding"):
        unpack(bytes(payload), bits, count)


def test_value_too_wide_is_a_caller_bug() -> None:
    with pytest.raises(ConfigError, match="does not fit in 24 bits"):
        pack(np.array([1 << 24], dtype=np.uint32), 24)
    with pytest.raises(ConfigError, match="does not fit in 8 bits"):
        pack(np.array([256], dtype=np.uint32), 8)
    with pytest.raises(ConfigError, match="negative"):
        pack(np.array([-1], dtype=np.int64), 16)


@pytest.mark.parametrize("bits", [0, 65, -3, True, 8.0])
def test_bad_width_is_config_error(bits: object) -> None:
    with pytest.raises(ConfigError, match="packing width"):
        pack(np.zeros(3, dtype=np.uint32), bits)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="packing width"):
        packed_size(3, bits)  # type: ignore[arg-type]


def test_bad_inputs_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        pack(np.zeros((2, 2), dtype=np.uint32), 8)
    with pytest.raises(ConfigError):
        pack(np.zeros(2, dtype=np.float64), 8)
    with pytest.raises(ConfigError):
        unpack(b"", 8, -1)
