"""Client-level DP stages: clipping, rotation, noise sizing, ring bounds, sigma = 0 path."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from fedveil.errors import ConfigError, RingOverflowError
from fedveil.secagg.dp import (
    ClientDPConfig,
    ClientDPPipeline,
    CryptoRandom,
    DistributedDiscreteGaussianEvent,
    Mechanism,
    NoisePlacement,
    PrivacyAccountant,
    RandomizedHadamard,
    SkellamEvent,
    add_central_noise,
    fwht,
    l2_clip,
)
from fedveil.secagg.dp import central as central_module
from fedveil.secagg.quantize import dequantize_sum, quantize


def _seed(*label: object) -> bytes:
    return hashlib.sha256(repr(label).encode()).digest()


def _updates(n: int, dim: int, scale: float = 0.03) -> list[np.ndarray]:
    # Update *data* may come from numpy's generator; only DP noise may not.
    gen = np.random.default_rng(1234)
    return [gen.normal(size=dim) * scale * (1 + i % 3) for i in range(n)]


def _variance_in_ci(samples: np.ndarray, variance: float, tail: float = 1e-6) -> bool:
    n = samples.shape[0]
    stat = (n - 1) * samples.var(ddof=1) / variance
    lo, hi = stats.chi2.ppf([tail, 1 - tail], n - 1)
    return bool(lo < stat < hi)


# --- clipping ------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    x=hnp.arrays(np.float64, st.integers(1, 50), elements=st.floats(-1e6, 1e6)),
    clip=st.floats(1e-3, 1e3),
)
def test_l2_clip_bounds_norm(x: np.ndarray, clip: float) -> None:
    original = x.copy()
    result = l2_clip(x, clip)
    assert np.linalg.norm(result.vector) <= clip
    assert np.array_equal(x, original)  # the input is not modified
    norm = np.linalg.norm(x)
    assert result.clipped == (norm > clip)
    if not result.clipped:
        assert np.array_equal(result.vector, x)
    elif norm > 0:
        cosine = result.vector @ x / (np.linalg.norm(result.vector) * norm)
        assert cosine == pytest.approx(1.0, abs=1e-9)
        assert np.linalg.norm(result.vector) == pytest.approx(clip, rel=1e-9)


def test_l2_clip_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="non-finite"):
        l2_clip(np.array([1.0, np.nan]), 1.0)
    with pytest.raises(ConfigError, match="clip_norm"):
        l2_clip(np.ones(3), 0.0)
    with pytest.raises(ConfigError, match="1-D float"):
        l2_clip(np.ones((2, 2)), 1.0)


# --- rotation ------------------------------------------------------------------------


def test_fwht_is_sylvester_hadamard_and_exact_on_integers() -> None:
    h = scipy.linalg.hadamard(16)
    eye = np.eye(16)
    assert np.array_equal(np.stack([fwht(row) for row in eye]), h)
    v = np.arange(-8, 8, dtype=np.int64) * 1_000_003
    assert np.array_equal(fwht(fwht(v)), 16 * v)  # H H = D I, exactly in int64
    with pytest.raises(ConfigError, match="power-of-two"):
        fwht(np.ones(12))


def test_randomized_hadamard_is_orthogonal_with_padding() -> None:
    rot = RandomizedHadamard(_seed("rot"), 5)
    assert rot.padded_dim == 8
    q = np.stack([rot.forward(e) for e in np.eye(5)], axis=1)  # 8 x 5
    assert np.allclose(q.T @ q, np.eye(5), atol=1e-12)
    full = RandomizedHadamard(_seed("rot"), 8)
    m = np.stack([full.forward(e) for e in np.eye(8)], axis=1)
    assert np.allclose(m @ m.T, np.eye(8), atol=1e-12)
    assert np.allclose(m, scipy.linalg.hadamard(8) @ np.diag(full.signs) / math.sqrt(8))
    assert set(np.unique(full.signs)) == {-1.0, 1.0}
    other = RandomizedHadamard(_seed("rot", 2), 8)
    assert not np.array_equal(other.signs, full.signs)


@settings(max_examples=40, deadline=None)
@given(x=hnp.arrays(np.float64, st.integers(1, 300), elements=st.floats(-1e3, 1e3)))
def test_rotation_inverts_and_keeps_norm(x: np.ndarray) -> None:
    rot = RandomizedHadamard(_seed("inv"), x.shape[0])
    y = rot.forward(x)
    assert y.shape == (rot.padded_dim,)
    assert np.linalg.norm(y) == pytest.approx(np.linalg.norm(x), rel=1e-12, abs=1e-9)
    assert np.allclose(rot.inverse(y), x, rtol=1e-12, atol=1e-9)
    # Linear: the inverse of a sum of rotations is the sum of the inputs.
    assert np.allclose(rot.inverse(y + rot.forward(2 * x)), 3 * x, rtol=1e-12, atol=1e-9)


def test_rotation_flattens_spikes_below_the_coordinate_clip() -> None:
    cfg = ClientDPConfig(1.0, 1.0, min_clients=2, max_cohort=4, dim=3000)
    pipe = ClientDPPipeline(cfg, rotation_seed=_seed("flat"))
    spike = np.zeros(3000)
    spike[17] = 1.0
    assert pipe.rotation is not None
    assert np.max(np.abs(pipe.rotation.encode(spike))) <= cfg.coordinate_clip
    assert cfg.coordinate_clip < 0.15 * cfg.clip_norm  # the point of rotating
    for update in _updates(5, 3000, scale=1.0):
        assert (
            pipe.client_encode(update, rng=CryptoRandom(_seed("flat", 1))).coordinates_clipped == 0
        )


# --- sigma = 0: the DP path is the plain quantisation path ---------------------------


def test_zero_noise_path_is_bit_exact_with_plain_quantize() -> None:
    cfg = ClientDPConfig(
        clip_norm=2.0, noise_multiplier=0.0, min_clients=1, max_cohort=4, dim=1000, rotate=False
    )
    pipe = ClientDPPipeline(cfg)
    plain_cfg = cfg.quantization
    ring = plain_cfg.ring
    updates = _updates(4, 1000, scale=0.04)
    dp_sum, plain_sum = ring.zeros(1001), ring.zeros(1001)
    for i, x in enumerate(updates):
        enc = pipe.client_encode(x, rng=CryptoRandom(_seed("zero", i)))
        plain = quantize(
            l2_clip(x, 2.0).vector,
            1,
            plain_cfg,
            rounding_seed=CryptoRandom(_seed("zero", i)).token(),
        )
        assert np.array_equal(enc.values, plain.values)
        assert enc.quantized_update.values is enc.values
        dp_sum += enc.values
        plain_sum += plain.values
    assert any(l2_clip(x, 2.0).clipped for x in updates)  # the clip stage was exercised
    ring.reduce(dp_sum)
    ring.reduce(plain_sum)
    decoded = pipe.server_decode(dp_sum, 4)
    reference = dequantize_sum(plain_sum, plain_cfg, 4)
    assert np.array_equal(decoded.mean, reference.weighted_mean)
    assert decoded.noise_std == 0.0
    # The other direction: with noise the same stream gives a different upload.
    noisy_cfg = ClientDPConfig(2.0, 0.5, 1, 4, 1000, rotate=False)
    enc = ClientDPPipeline(noisy_cfg).client_encode(updates[0], rng=CryptoRandom(_seed("zero", 0)))
    first = quantize(
        l2_clip(updates[0], 2.0).vector,
        1,
        noisy_cfg.quantization,
        rounding_seed=CryptoRandom(_seed("zero", 0)).token(),
    )
    assert np.count_nonzero(enc.values != first.values) > 900
    assert enc.values[-1] == first.values[-1] == 1  # the weight element is never noised


def test_zero_noise_rotated_path_is_rotation_then_quantize() -> None:
    cfg = ClientDPConfig(1.0, 0.0, 1, 4, dim=600)
    pipe = ClientDPPipeline(cfg, rotation_seed=_seed("zr"))
    x = _updates(1, 600, scale=0.1)[0]
    enc = pipe.client_encode(x, rng=CryptoRandom(_seed("zr", 1)))
    rotated = RandomizedHadamard(_seed("zr"), 600).forward(l2_clip(x, 1.0).vector)
    plain = quantize(
        rotated, 1, cfg.quantization, rounding_seed=CryptoRandom(_seed("zr", 1)).token()
    )
    assert np.array_equal(enc.values, plain.values)
    decoded = pipe.server_decode(enc.values.copy(), 1)
    assert np.linalg.norm(decoded.sum - l2_clip(x, 1.0).vector) <= decoded.rounding_error_l2


# --- noise sizing --------------------------------------------------------------------


def _noise_shares(
    pipe: ClientDPPipeline, updates: list[np.ndarray], tag: str
) -> tuple[np.ndarray, np.ndarray]:
    """Each client's exact noise (the encoding minus its noise-free twin from the same
    stream), and the ring sum of the encodings."""
    cfg = pipe.config
    ring = cfg.quantization.ring
    shares, total = [], ring.zeros(pipe.upload_length)
    for i, x in enumerate(updates):
        enc = pipe.client_encode(x, rng=CryptoRandom(_seed(tag, i)))
        clipped = l2_clip(x, cfg.clip_norm).vector
        y = pipe.rotation.encode(clipped) if pipe.rotation else clipped
        twin, _ = pipe.quantize.encode(y, CryptoRandom(_seed(tag, i)))
        diff = enc.values - twin.values
        ring.reduce(diff)
        shares.append(ring.to_signed(diff)[: cfg.padded_dim])
        total += enc.values
    ring.reduce(total)
    return np.stack(shares), total


@pytest.mark.parametrize("mechanism", list(Mechanism))
@pytest.mark.parametrize("clients", [4, 8])
def test_aggregate_noise_variance_matches_target(mechanism: Mechanism, clients: int) -> None:
    dim, z, n_min = 3000, 0.7, 4
    cfg = ClientDPConfig(1.0, z, min_clients=n_min, max_cohort=8, dim=dim, mechanism=mechanism)
    pipe = ClientDPPipeline(cfg, rotation_seed=_seed("var"))
    updates = _updates(clients, dim)
    shares, total = _noise_shares(pipe, updates, f"var-{mechanism.value}-{clients}")
    aggregate = shares.sum(axis=0).astype(np.float64)
    target = (z * cfg.l2_sensitivity) ** 2  # sigma^2 C^2 in levels, at n_min clients
    assert cfg.client_noise_variance == pytest.approx(target / n_min)
    assert _variance_in_ci(aggregate, target * clients / n_min)
    # Power: the test rejects the wrong sizes (noise not split, or split n ways).
    assert not _variance_in_ci(aggregate, target * clients)
    if clients != n_min:
        assert not _variance_in_ci(aggregate, target)
    # In update units the target is sigma^2 C^2 (the rounding inflation is tiny here).
    assert cfg.noise_std == pytest.approx(z * cfg.clip_norm, rel=1e-3)
    # The server's decoded sum carries exactly that noise, unrotated.
    decoded = pipe.server_decode(total, clients)
    error = decoded.sum - sum(l2_clip(x, 1.0).vector for x in updates)
    assert decoded.noise_std * clients == pytest.approx(cfg.noise_std * math.sqrt(clients / n_min))
    assert _variance_in_ci(error, (decoded.noise_std * clients) ** 2)


def test_config_events_carry_the_configured_noise() -> None:
    cfg = ClientDPConfig(1.0, 1.3, min_clients=5, max_cohort=20, dim=10_000)
    (event,) = cfg.events(sampling_prob=0.1, steps=3)
    assert isinstance(event, DistributedDiscreteGaussianEvent)
    assert event.num_clients == 5 and event.dim == cfg.padded_dim == 16384
    assert event.nominal_noise_multiplier() == pytest.approx(1.3)
    assert event.sampling_prob == 0.1 and event.steps == 3
    skellam = ClientDPConfig(1.0, 1.3, 5, 20, 10_000, mechanism=Mechanism.SKELLAM)
    (sk_event,) = skellam.events()
    assert isinstance(sk_event, SkellamEvent)
    assert sk_event.nominal_noise_multiplier() == pytest.approx(1.3)
    acc = PrivacyAccountant("rdp")
    acc.compose(event)
    assert 0 < acc.epsilon(1e-5) < math.inf
    assert cfg.to_dict()["noise_multiplier"] == 1.3 and cfg.to_dict()["clip_norm"] == 1.0


# --- ring bounds ---------------------------------------------------------------------


def test_ring_too_small_names_the_bound() -> None:
    with pytest.raises(RingOverflowError, match=r"noised value-sum bound fails.*bits=16"):
        ClientDPConfig(1.0, 1.0, min_clients=2, max_cohort=1000, dim=100_000, bits=16)


def test_derived_scale_is_the_largest_that_fits() -> None:
    cfg = ClientDPConfig(1.0, 1.0, min_clients=3, max_cohort=10, dim=5000, bits=24)
    s = cfg.effective_scale
    ClientDPConfig(1.0, 1.0, 3, 10, 5000, bits=24, scale=s)  # fits
    with pytest.raises(
        RingOverflowError, match=r"noised value-sum bound fails.*2\^\(bits-1\) - 1 = 8388607"
    ):
        ClientDPConfig(1.0, 1.0, 3, 10, 5000, bits=24, scale=s * 1.001)
    # More honest clients guaranteed -> less noise each -> a finer scale fits the ring.
    assert ClientDPConfig(1.0, 1.0, 10, 10, 5000, bits=24).effective_scale > s


def test_worst_case_cohort_does_not_wrap() -> None:
    dim, n, clip = 64, 6, 1.0
    cfg = ClientDPConfig(clip, 2.0, min_clients=2, max_cohort=n, dim=dim, bits=20, rotate=False)
    pipe = ClientDPPipeline(cfg)
    spike = np.zeros(dim)
    spike[0] = -clip  # every client at the clip, same sign, same coordinate
    ring = cfg.quantization.ring
    total = ring.zeros(pipe.upload_length)
    for i in range(n):
        total += pipe.client_encode(spike, rng=CryptoRandom(_seed("wrap", i))).values
    ring.reduce(total)
    decoded = pipe.server_decode(total, n)
    sum_std = decoded.noise_std * n
    # A wrap would put the result off by the modulus, 2^20 levels.
    assert abs(decoded.sum[0] - (-n * clip)) < 6 * sum_std < (1 << 20) / cfg.effective_scale / 2
    # The ring is used: data plus noise tail take nearly all of it.
    assert n * clip * cfg.effective_scale > (1 << 19) / 20


def test_config_validation_names_the_value() -> None:
    with pytest.raises(ConfigError, match="min_clients=9 exceeds max_cohort=4"):
        ClientDPConfig(1.0, 1.0, 9, 4, 10)
    with pytest.raises(ConfigError, match="clip_norm"):
        ClientDPConfig(-1.0, 1.0, 1, 4, 10)
    with pytest.raises(ConfigError, match="noise_multiplier"):
        ClientDPConfig(1.0, float("inf"), 1, 4, 10)
    with pytest.raises(ConfigError, match="rotation_seed"):
        ClientDPPipeline(ClientDPConfig(1.0, 1.0, 1, 4, 10))
    pipe = ClientDPPipeline(ClientDPConfig(1.0, 1.0, 1, 4, 10, rotate=False))
    with pytest.raises(ConfigError, match=r"shape \(10,\)"):
        pipe.client_encode(np.ones(11))


def test_decode_refuses_a_sum_of_the_wrong_size() -> None:
    cfg = ClientDPConfig(1.0, 1.0, 2, 4, 50, rotate=False)
    pipe = ClientDPPipeline(cfg)
    ring = cfg.quantization.ring
    total = ring.zeros(pipe.upload_length)
    for i in range(3):
        total += pipe.client_encode(np.ones(50) * 0.01, rng=CryptoRandom(_seed("n", i))).values
    ring.reduce(total)
    pipe.server_decode(total, 3)
    with pytest.raises(ConfigError, match="counts 3 contributions but cohort_size is 4"):
        pipe.server_decode(total, 4)
    single = pipe.client_encode(np.ones(50) * 0.01, rng=CryptoRandom(_seed("n", 9))).values
    with pytest.raises(ConfigError, match="less noise than was accounted"):
        pipe.server_decode(single, 1)


# --- central DP ----------------------------------------------------------------------


def test_central_noise_is_added_by_the_server_only() -> None:
    dim, n = 2048, 5
    cfg = ClientDPConfig(1.0, 0.8, 1, 8, dim, placement=NoisePlacement.SERVER, rotate=False)
    assert cfg.client_noise_variance == 0
    pipe = ClientDPPipeline(cfg)
    updates = _updates(n, dim)
    shares, total = _noise_shares(pipe, updates, "central")
    assert not shares.any()  # clients add nothing
    decoded = pipe.server_decode(total, n, rng=CryptoRandom(_seed("server")))
    error = decoded.sum - sum(l2_clip(x, 1.0).vector for x in updates)
    sum_std = math.sqrt(cfg.server_noise_variance) / cfg.effective_scale
    assert sum_std == pytest.approx(0.8, rel=1e-3)
    assert _variance_in_ci(error, sum_std**2)
    (event,) = cfg.events()
    assert isinstance(event, DistributedDiscreteGaussianEvent) and event.num_clients == 1
    assert event.nominal_noise_multiplier() == pytest.approx(0.8)
    distributed = ClientDPConfig(1.0, 0.8, 1, 8, dim, rotate=False)
    with pytest.raises(ConfigError, match="placement"):
        add_central_noise(np.zeros(4, dtype=np.int64), distributed)
    assert "TRUSTS THE SERVER" in (central_module.__doc__ or "")
    assert "TRUSTS THE SERVER" in (add_central_noise.__doc__ or "")
