"""A masked upload is statistically uniform over Z_{2^m}: the server learns nothing from it
alone. The same test rejects the unmasked quantised update, so it has the power to fail."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chisquare

from fedveil.secagg.protocol.stages import Stage
from fedveil.secagg.quantize import unpack
from tests.helpers.harness import LiveRound

BINS = 256
ALPHA = 1e-6  # a uniform upload fails this only once in a million runs


def top_byte_histogram(values: np.ndarray, bits: int) -> np.ndarray:
    top = (values.astype(np.uint64) >> np.uint64(bits - 8)).astype(np.int64)
    return np.bincount(top, minlength=BINS)


def masked_upload(bits: int, dimension: int, inputs: str) -> tuple[np.ndarray, np.ndarray]:
    live = LiveRound.start(n=4, bits=bits, dimension=dimension)
    if inputs == "zeros":
        for cid, client in live.clients.items():
            live.inputs[cid] = np.zeros(dimension, dtype=np.float32)
            client.set_input(live.inputs[cid], live.weights[cid])
    live.run_to(Stage.MASKED_INPUT)
    client = live.clients["client-0"]
    plain = client._input.values.copy()
    upload = client.handle(live.server.request_for("client-0"))
    return unpack(upload.payload, bits, live.config.element_count), plain


@pytest.mark.parametrize("bits", [16, 24, 32, 48])
@pytest.mark.parametrize("inputs", ["zeros", "uniform"])
def test_masked_upload_is_uniform(bits: int, inputs: str) -> None:
    masked, plain = masked_upload(bits, 50_000, inputs)
    p_masked = chisquare(top_byte_histogram(masked, bits)).pvalue
    p_plain = chisquare(top_byte_histogram(plain, bits)).pvalue
    assert p_masked > ALPHA, f"masked upload is not uniform (p={p_masked:.2e})"
    assert p_plain < ALPHA, f"the test cannot tell the plain update from uniform (p={p_plain:.2e})"


def test_low_bits_are_uniform_too() -> None:
    masked, plain = masked_upload(32, 50_000, "zeros")
    low = (masked & np.uint32(BINS - 1)).astype(np.int64)
    assert chisquare(np.bincount(low, minlength=BINS)).pvalue > ALPHA
    assert (
        chisquare(
            np.bincount((plain & np.uint32(BINS - 1)).astype(np.int64), minlength=BINS)
        ).pvalue
        < ALPHA
    )
