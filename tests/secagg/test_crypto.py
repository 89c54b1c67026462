"""Behaviour of the crypto core, in both directions: what must work and what must raise.

Known-answer bytes live in test_crypto_vectors.py; here are the properties the protocol
relies on: masks cancel, keys are separated by purpose, session and context, any t
shares rebuild a secret while fewer (or tampered ones) fail, envelopes open only in their
exact context, and signatures verify only for the exact statement.
"""

from __future__ import annotations

import ast
import hashlib
import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from fedveil.errors import (
    ConfigError,
    CryptoError,
    DecryptionError,
    FedveilError,
    InconsistentSharesError,
    InsufficientSharesError,
    InvalidMessageError,
    InvalidSignatureError,
)
from fedveil.secagg.crypto import envelope, identity, kdf, prg, shamir
from fedveil.secagg.crypto.encoding import decode_fields, encode_fields, encode_id_set
from tests.helpers import REPO_ROOT

REPO = REPO_ROOT
MASK_DTYPES = [np.uint16, np.uint32, np.uint64]
SEED_A = bytes(range(32))
SEED_B = bytes(range(1, 33))
SESSION = hashlib.sha256(b"fedveil test session").digest()
OTHER_SESSION = hashlib.sha256(b"fedveil other session").digest()

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class _DeterministicStream:
    """SHA-256 counter-mode bytes: reproducible randomness for statistical tests."""

    def __init__(self, label: bytes) -> None:
        self._label = label
        self._buffer = bytearray()
        self._counter = 0

    def __call__(self, nbytes: int) -> bytes:
        while len(self._buffer) < nbytes:
            block = self._label + self._counter.to_bytes(8, "big")
            self._buffer += hashlib.sha256(block).digest()
            self._counter += 1
        out = bytes(self._buffer[:nbytes])
        del self._buffer[:nbytes]
        return out


def _arange(dtype: type, count: int) -> np.ndarray:
    return np.arange(count, dtype=np.uint64).astype(dtype)


# --- PRG -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", MASK_DTYPES)
@FAST
@given(
    count=st.integers(0, 3000),
    chunk_blocks=st.integers(1, 40),
    seed=st.binary(min_size=32, max_size=32),
)
def test_mask_add_then_subtract_restores(
    dtype: type, count: int, chunk_blocks: int, seed: bytes
) -> None:
    original = _arange(dtype, count)
    acc = original.copy()
    expander = prg.MaskExpander(16 * chunk_blocks)
    expander.apply(acc, seed)
    if count >= 8:
        assert not np.array_equal(acc, original)
    expander.apply(acc, seed, subtract=True)
    np.testing.assert_array_equal(acc, original)


@pytest.mark.parametrize("dtype", MASK_DTYPES)
def test_pairwise_masks_cancel_in_any_order(dtype: type) -> None:
    """+PRG(s) from one client and -PRG(s) from its peer cancel in the sum (mod 2^w)."""
    original = _arange(dtype, 1001)
    acc = original.copy()
    prg.add_mask(acc, SEED_A)
    prg.add_mask(acc, SEED_B, subtract=True)
    prg.add_mask(acc, SEED_B)
    prg.add_mask(acc, SEED_A, subtract=True)
    np.testing.assert_array_equal(acc, original)


@pytest.mark.parametrize("dtype", MASK_DTYPES)
@pytest.mark.parametrize("subtract", [False, True])
def test_chunked_apply_equals_one_shot_keystream(dtype: type, subtract: bool) -> None:
    itemsize = np.dtype(dtype).itemsize
    chunk_bytes = 64
    count = 10 * chunk_bytes // itemsize + 3  # not a multiple of the chunk
    acc = _arange(dtype, count)
    expected = acc.copy()
    stream = np.frombuffer(prg.keystream(SEED_A, count * itemsize), dtype=np.dtype(dtype))
    if subtract:
        expected -= stream
    else:
        expected += stream
    prg.MaskExpander(chunk_bytes).apply(acc, SEED_A, subtract=subtract)
    np.testing.assert_array_equal(acc, expected)


def test_chunked_apply_equals_one_shot_beyond_default_chunk() -> None:
    count = 100_003
    acc = np.zeros(count, dtype=np.uint32)
    prg.add_mask(acc, SEED_B)
    stream = np.frombuffer(prg.keystream(SEED_B, 4 * count), dtype="<u4")
    np.testing.assert_array_equal(acc, stream)


def test_expander_is_reusable_across_calls_and_dtypes() -> None:
    expander = prg.MaskExpander(48)
    for dtype in MASK_DTYPES:
        for seed in (SEED_A, SEED_B):
            acc = np.zeros(77, dtype=dtype)
            expander.apply(acc, seed)
            fresh = np.zeros(77, dtype=dtype)
            prg.add_mask(fresh, seed)
            np.testing.assert_array_equal(acc, fresh)


def test_different_seeds_give_different_masks() -> None:
    a = np.zeros(256, dtype=np.uint32)
    b = np.zeros(256, dtype=np.uint32)
    prg.add_mask(a, SEED_A)
    prg.add_mask(b, SEED_B)
    assert not np.array_equal(a, b)
    assert np.count_nonzero(a == b) < 4
    assert prg.keystream(SEED_A, 32) != prg.keystream(SEED_B, 32)


def test_same_seed_gives_same_mask() -> None:
    a = np.zeros(100, dtype=np.uint64)
    b = np.zeros(100, dtype=np.uint64)
    prg.add_mask(a, SEED_A)
    prg.add_mask(b, bytearray(SEED_A))  # type: ignore[arg-type]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "seed", [b"", bytes(16), bytes(31), bytes(33), bytes(64), "0" * 32, 12345, None]
)
def test_wrong_seed_raises_config_error(seed: object) -> None:
    acc = np.zeros(8, dtype=np.uint32)
    with pytest.raises(ConfigError, match="32 bytes"):
        prg.add_mask(acc, seed)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        prg.keystream(seed, 16)  # type: ignore[arg-type]
    np.testing.assert_array_equal(acc, 0)


@pytest.mark.parametrize(
    "dtype", [np.int32, np.int64, np.uint8, np.float32, np.float64, ">u4", ">u8", ">u2"]
)
def test_wrong_dtype_raises_config_error(dtype: npt.DTypeLike) -> None:
    acc = np.zeros(8, dtype=dtype)
    with pytest.raises(ConfigError, match="uint16/uint32/uint64"):
        prg.add_mask(acc, SEED_A)


def test_non_contiguous_or_multidimensional_array_raises_config_error() -> None:
    strided = np.zeros(16, dtype=np.uint32)[::2]
    assert not strided.flags.c_contiguous
    with pytest.raises(ConfigError):
        prg.add_mask(strided, SEED_A)
    with pytest.raises(ConfigError):
        prg.add_mask(np.zeros((4, 4), dtype=np.uint32), SEED_A)
    with pytest.raises(ConfigError):
        prg.add_mask(np.zeros((4, 4), dtype=np.uint32)[:, 0], SEED_A)
    with pytest.raises(ConfigError):
        prg.add_mask(np.zeros(8, dtype=np.uint32)[::-1], SEED_A)


@pytest.mark.parametrize("chunk_bytes", [0, -16, 8, 17, 100])
def test_bad_chunk_size_raises_config_error(chunk_bytes: int) -> None:
    with pytest.raises(ConfigError, match="chunk_bytes"):
        prg.MaskExpander(chunk_bytes)


def test_keystream_negative_length_raises_and_zero_is_empty() -> None:
    with pytest.raises(ConfigError):
        prg.keystream(SEED_A, -1)
    assert prg.keystream(SEED_A, 0) == b""


def test_uniform_unit_interval_is_in_range_and_deterministic() -> None:
    values = prg.uniform_unit_interval(SEED_A, 20_000)
    assert values.dtype == np.float64 and values.shape == (20_000,)
    assert np.all(values >= 0.0) and np.all(values < 1.0)
    assert abs(values.mean() - 0.5) < 0.02
    np.testing.assert_array_equal(values, prg.uniform_unit_interval(SEED_A, 20_000))
    assert prg.uniform_unit_interval(SEED_A, 0).shape == (0,)


def _rng_uses(path: Path) -> list[str]:
    """Imports of `random` / `numpy.random` and `np.random` / `numpy.random` attribute use."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "random" or alias.name.startswith("numpy.random"):
                    found.append(f"{path}:{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            names = {alias.name for alias in node.names}
            if module == "random" or module.startswith("numpy.random"):
                found.append(f"{path}:{node.lineno}: from {module} import ...")
            elif module == "numpy" and "random" in names:
                found.append(f"{path}:{node.lineno}: from numpy import random")
        elif isinstance(node, ast.Attribute):
            base = node.value
            if isinstance(base, ast.Name):
                if base.id in {"np", "numpy"} and node.attr == "random":
                    found.append(f"{path}:{node.lineno}: {base.id}.random")
                elif base.id == "random":
                    found.append(f"{path}:{node.lineno}: random.{node.attr}")
    return found


def test_secagg_uses_no_non_cryptographic_rng() -> None:
    """Masks, shares and rounding noise must never come from numpy's or Python's RNG."""
    files = sorted((REPO / "fedveil" / "secagg").rglob("*.py"))
    assert files, "secagg sources not found"
    offenders = [use for path in files for use in _rng_uses(path)]
    assert offenders == []


def test_rng_scanner_detects_uses(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import random\nimport numpy as np\nfrom numpy.random import default_rng\n"
        "x = np.random.default_rng(0)\ny = random.random()\n# np.random in a comment\n"
    )
    assert len(_rng_uses(sample)) == 4


# --- KDF -----------------------------------------------------------------------------

SECRET = hashlib.sha256(b"shared secret").digest()


def test_each_purpose_gives_a_different_key() -> None:
    keys = {kdf.derive_key(SECRET, purpose, SESSION, "alice", "bob") for purpose in kdf.Purpose}
    assert len(keys) == len(kdf.Purpose)
    labels = [purpose.value for purpose in kdf.Purpose]
    assert len(set(labels)) == len(labels)


def test_kdf_is_deterministic() -> None:
    a = kdf.derive_key(SECRET, kdf.Purpose.PAIRWISE_MASK, SESSION, "alice", "bob")
    b = kdf.derive_key(SECRET, kdf.Purpose.PAIRWISE_MASK, SESSION, "alice", "bob")
    assert a == b and len(a) == 32


def test_different_session_gives_a_different_key() -> None:
    a = kdf.derive_key(SECRET, kdf.Purpose.PAIRWISE_MASK, SESSION, "alice", "bob")
    b = kdf.derive_key(SECRET, kdf.Purpose.PAIRWISE_MASK, OTHER_SESSION, "alice", "bob")
    assert a != b


def test_different_secret_gives_a_different_key() -> None:
    a = kdf.derive_key(SECRET, kdf.Purpose.SELF_MASK, SESSION)
    b = kdf.derive_key(SECRET[:-1] + bytes([SECRET[-1] ^ 1]), kdf.Purpose.SELF_MASK, SESSION)
    assert a != b


def test_context_boundaries_are_unambiguous() -> None:
    derive = kdf.derive_key
    assert derive(SECRET, kdf.Purpose.SELF_MASK, SESSION, "a", "bc") != derive(
        SECRET, kdf.Purpose.SELF_MASK, SESSION, "ab", "c"
    )
    assert derive(SECRET, kdf.Purpose.SELF_MASK, SESSION, "ab") != derive(
        SECRET, kdf.Purpose.SELF_MASK, SESSION, "a", "b"
    )
    assert derive(SECRET, kdf.Purpose.SELF_MASK, SESSION) != derive(
        SECRET, kdf.Purpose.SELF_MASK, SESSION, ""
    )
    assert derive(SECRET, kdf.Purpose.PAIRWISE_MASK, SESSION, "alice", "bob") != derive(
        SECRET, kdf.Purpose.PAIRWISE_MASK, SESSION, "bob", "alice"
    )


def test_kdf_length_is_respected() -> None:
    for length in (16, 32, 64):
        assert len(kdf.derive_key(SECRET, kdf.Purpose.SELF_MASK, SESSION, length=length)) == length


@pytest.mark.parametrize("session", [b"", bytes(16), bytes(31), bytes(33), bytes(64)])
def test_bad_session_id_length_raises_config_error(session: bytes) -> None:
    with pytest.raises(ConfigError, match="session id"):
        kdf.derive_key(SECRET, kdf.Purpose.SELF_MASK, session)


def test_empty_secret_and_unknown_purpose_raise_config_error() -> None:
    with pytest.raises(ConfigError):
        kdf.derive_key(b"", kdf.Purpose.SELF_MASK, SESSION)
    with pytest.raises(ConfigError, match="Purpose"):
        kdf.derive_key(SECRET, "self-mask", SESSION)  # type: ignore[arg-type]


# --- encoding ------------------------------------------------------------------------

FIELDS = st.lists(
    st.one_of(st.binary(max_size=40), st.text(max_size=20), st.integers(0, 2**64 - 1)),
    max_size=8,
)


def _field_bytes(field: bytes | str | int) -> bytes:
    if isinstance(field, int):
        return field.to_bytes(8, "big")
    return field.encode("utf-8") if isinstance(field, str) else field


@FAST
@given(fields=FIELDS)
def test_encode_decode_round_trip(fields: list[bytes | str | int]) -> None:
    encoded = encode_fields(*fields)
    assert decode_fields(encoded, len(fields)) == [_field_bytes(f) for f in fields]


@FAST
@given(fields=FIELDS.filter(bool), data=st.data())
def test_truncated_encoding_raises(fields: list[bytes | str | int], data: st.DataObject) -> None:
    encoded = encode_fields(*fields)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(InvalidMessageError):
        decode_fields(encoded[:cut], len(fields))


@FAST
@given(fields=FIELDS, extra=st.binary(min_size=1, max_size=8))
def test_trailing_bytes_raise(fields: list[bytes | str | int], extra: bytes) -> None:
    with pytest.raises(InvalidMessageError, match="trailing"):
        decode_fields(encode_fields(*fields) + extra, len(fields))


@FAST
@given(a=st.lists(st.binary(max_size=6), max_size=4), b=st.lists(st.binary(max_size=6), max_size=4))
def test_encoding_is_injective(a: list[bytes], b: list[bytes]) -> None:
    assert (encode_fields(*a) == encode_fields(*b)) == (a == b)


def test_encoding_rejects_what_it_cannot_encode() -> None:
    assert encode_fields("a", "bc") != encode_fields("ab", "c")
    with pytest.raises(TypeError):
        encode_fields(True)
    with pytest.raises(ValueError):
        encode_fields(-1)
    with pytest.raises(TypeError):
        encode_fields(1.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidMessageError):
        decode_fields(b"\x00\x00", 1)
    assert encode_id_set(["b", "a", "c"]) == encode_id_set({"c", "a", "b"})


# --- Shamir --------------------------------------------------------------------------

PRIME = shamir.PRIME


@st.composite
def sharings(draw: st.DrawFn, min_n: int = 2) -> tuple[bytes, int, list[int]]:
    n = draw(st.integers(min_n, 30))
    threshold = draw(st.integers(1, n))
    if draw(st.booleans()):
        xs = list(range(1, n + 1))
    else:
        xs = draw(st.lists(st.integers(1, PRIME - 1), min_size=n, max_size=n, unique=True))
    return draw(st.binary(min_size=32, max_size=32)), threshold, xs


def _lagrange_at_zero(xs: list[int], i: int) -> int:
    num, den = 1, 1
    for j, xj in enumerate(xs):
        if j != i:
            num = num * (-xj) % PRIME
            den = den * (xs[i] - xj) % PRIME
    return num * pow(den, PRIME - 2, PRIME) % PRIME


def _with_limb(share: shamir.Share, limb: int, value: int) -> shamir.Share:
    limbs = np.frombuffer(share.y, dtype=">u4").copy()
    limbs[limb] = value
    return shamir.Share(x=share.x, y=limbs.tobytes())


@FAST
@given(params=sharings(), data=st.data())
def test_any_t_shares_rebuild_the_secret(
    params: tuple[bytes, int, list[int]], data: st.DataObject
) -> None:
    secret, threshold, xs = params
    shares = shamir.split(secret, threshold, xs)
    assert [s.x for s in shares] == xs
    chosen = data.draw(st.permutations(shares)).copy()[: data.draw(st.integers(threshold, len(xs)))]
    assert shamir.combine(chosen, threshold) == secret


@FAST
@given(params=sharings(), data=st.data())
def test_fewer_than_t_shares_raise(
    params: tuple[bytes, int, list[int]], data: st.DataObject
) -> None:
    secret, threshold, xs = params
    shares = shamir.split(secret, threshold, xs)
    few = data.draw(st.permutations(shares))[: threshold - 1]
    with pytest.raises(InsufficientSharesError):
        shamir.combine(few, threshold)


@FAST
@given(
    params=sharings(),
    data=st.data(),
    limb=st.integers(0, shamir.LIMBS - 1),
    shift=st.integers(1 << 16, PRIME - (1 << 16)),
)
def test_tampered_share_among_exactly_t_fails_the_range_check(
    params: tuple[bytes, int, list[int]], data: st.DataObject, limb: int, shift: int
) -> None:
    """Among exactly t shares a changed limb is caught by the 16-bit range check.

    The change is chosen so that the rebuilt limb moves by `shift` in [2^16, p - 2^16],
    which always leaves [0, 2^16): the range check has to fire, with no probability slack.
    """
    secret, threshold, xs = params
    chosen = data.draw(st.permutations(shamir.split(secret, threshold, xs)))[:threshold]
    victim = data.draw(st.integers(0, threshold - 1))
    chosen_xs = [s.x for s in chosen]
    weight = _lagrange_at_zero(chosen_xs, victim)
    delta = shift * pow(weight, PRIME - 2, PRIME) % PRIME
    old = int(np.frombuffer(chosen[victim].y, dtype=">u4")[limb])
    chosen[victim] = _with_limb(chosen[victim], limb, (old + delta) % PRIME)
    with pytest.raises(InconsistentSharesError, match="out of range"):
        shamir.combine(chosen, threshold)


@FAST
@given(
    params=sharings(min_n=3),
    data=st.data(),
    limb=st.integers(0, shamir.LIMBS - 1),
    delta=st.integers(1, PRIME - 1),
)
def test_tampered_share_among_more_than_t_is_detected(
    params: tuple[bytes, int, list[int]], data: st.DataObject, limb: int, delta: int
) -> None:
    secret, threshold, xs = params
    if threshold == len(xs):
        threshold -= 1
    count = data.draw(st.integers(threshold + 1, len(xs)))
    chosen = data.draw(st.permutations(shamir.split(secret, threshold, xs)))[:count]
    victim = data.draw(st.integers(0, count - 1))
    old = int(np.frombuffer(chosen[victim].y, dtype=">u4")[limb])
    chosen[victim] = _with_limb(chosen[victim], limb, (old + delta) % PRIME)
    with pytest.raises(InconsistentSharesError):
        shamir.combine(chosen, threshold)


def test_share_value_outside_the_field_raises() -> None:
    shares = shamir.split(SEED_A, 2, [1, 2, 3])
    shares[0] = _with_limb(shares[0], 3, PRIME)
    with pytest.raises(InconsistentSharesError, match="outside"):
        shamir.combine(shares[:2], 2)


def test_duplicate_points_raise() -> None:
    shares = shamir.split(SEED_A, 2, [1, 2, 3])
    with pytest.raises(InconsistentSharesError, match="duplicate"):
        shamir.combine([shares[0], shares[0]], 2)
    with pytest.raises(InconsistentSharesError, match="duplicate"):
        shamir.combine([shares[0], shares[1], shares[0]], 2)
    with pytest.raises(ConfigError, match="distinct"):
        shamir.split(SEED_A, 2, [1, 2, 2])


@pytest.mark.parametrize(
    ("threshold", "xs"),
    [(0, [1, 2]), (-1, [1, 2]), (3, [1, 2]), (1, []), (2, [0, 1]), (2, [1, PRIME]), (2, [-1, 2])],
)
def test_bad_split_parameters_raise_config_error(threshold: int, xs: list[int]) -> None:
    with pytest.raises(ConfigError):
        shamir.split(SEED_A, threshold, xs)


@pytest.mark.parametrize("secret", [b"", bytes(31), bytes(33), "x" * 32])
def test_bad_secret_raises_config_error(secret: object) -> None:
    with pytest.raises(ConfigError, match="32 bytes"):
        shamir.split(secret, 2, [1, 2, 3])  # type: ignore[arg-type]


def test_bad_share_and_combine_threshold_raise_config_error() -> None:
    with pytest.raises(ConfigError):
        shamir.Share(x=0, y=bytes(shamir.SHARE_BYTES))
    with pytest.raises(ConfigError):
        shamir.Share(x=PRIME, y=bytes(shamir.SHARE_BYTES))
    with pytest.raises(ConfigError):
        shamir.Share(x=1, y=bytes(shamir.SHARE_BYTES - 1))
    shares = shamir.split(SEED_A, 1, [1])
    with pytest.raises(ConfigError):
        shamir.combine(shares, 0)


def test_split_many_matches_independent_sharing() -> None:
    secrets = [SEED_A, SEED_B, bytes(32)]
    dealt = shamir.split_many(secrets, 3, [5, 6, 7, 8])
    assert len(dealt) == 3 and all(len(row) == 4 for row in dealt)
    for secret, shares in zip(secrets, dealt, strict=True):
        assert shamir.combine(shares[1:], 3) == secret
    assert shamir.split_many([], 2, [1, 2]) == []


def test_threshold_one_shares_are_the_secret_itself() -> None:
    shares = shamir.split(SEED_A, 1, [1, 2])
    limbs = np.frombuffer(SEED_A, dtype=">u2").astype(">u4").tobytes()
    assert all(s.y == limbs for s in shares)


def test_fewer_than_t_shares_carry_no_information() -> None:
    """t = 2: one share's limb is uniform on GF(p) whatever the secret (two-sample KS).

    Randomness is a fixed SHA-256 stream so the test is reproducible, not flaky.
    """
    count = 2000
    secret_a, secret_b = bytes(32), b"\xff" * 32
    shares_a = shamir.split_many(
        [secret_a] * count, 2, [1, 2], random_bytes=_DeterministicStream(b"ks/a")
    )
    shares_b = shamir.split_many(
        [secret_b] * count, 2, [1, 2], random_bytes=_DeterministicStream(b"ks/b")
    )
    for holder in (0, 1):
        first_a = np.array([int.from_bytes(s[holder].y[:4], "big") for s in shares_a])
        first_b = np.array([int.from_bytes(s[holder].y[:4], "big") for s in shares_b])
        assert stats.ks_2samp(first_a, first_b).pvalue > 1e-4
        assert stats.kstest(first_a / PRIME, "uniform").pvalue > 1e-4
    # Sanity check that the test can see a dependence: with t = 1 the share is the secret.
    leaky_a = shamir.split_many([secret_a] * 50, 1, [1])
    leaky_b = shamir.split_many([secret_b] * 50, 1, [1])
    first_a = np.array([int.from_bytes(s[0].y[:4], "big") for s in leaky_a])
    first_b = np.array([int.from_bytes(s[0].y[:4], "big") for s in leaky_b])
    assert stats.ks_2samp(first_a, first_b).pvalue < 1e-4


# --- Envelope ------------------------------------------------------------------------


def _x25519_pair() -> tuple[X25519PrivateKey, bytes]:
    private = X25519PrivateKey.generate()
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return private, public


ALGORITHMS = list(envelope.AeadAlgorithm)
CONTEXT = envelope.EnvelopeContext(SESSION, "alice", "bob", "share-keys")


@pytest.fixture(scope="module")
def parties() -> dict[str, tuple[X25519PrivateKey, bytes]]:
    return {name: _x25519_pair() for name in ("alice", "bob", "mallory")}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("plaintext", [b"", b"x", bytes(range(64)), os.urandom(1000)])
def test_seal_unseal_round_trip(
    parties: dict[str, tuple[X25519PrivateKey, bytes]],
    algorithm: envelope.AeadAlgorithm,
    plaintext: bytes,
) -> None:
    alice, alice_pub = parties["alice"]
    bob, bob_pub = parties["bob"]
    sealed = envelope.seal(alice, bob_pub, plaintext, CONTEXT, algorithm=algorithm)
    assert len(sealed) == envelope.NONCE_BYTES + len(plaintext) + envelope.TAG_BYTES
    assert envelope.unseal(bob, alice_pub, sealed, CONTEXT, algorithm=algorithm) == plaintext
    # Public keys may be passed as objects as well as raw bytes.
    opened = envelope.unseal(bob, alice.public_key(), sealed, CONTEXT, algorithm=algorithm)
    assert opened == plaintext


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_fresh_nonce_per_seal(
    parties: dict[str, tuple[X25519PrivateKey, bytes]], algorithm: envelope.AeadAlgorithm
) -> None:
    alice, _ = parties["alice"]
    _, bob_pub = parties["bob"]
    first = envelope.seal(alice, bob_pub, b"same", CONTEXT, algorithm=algorithm)
    second = envelope.seal(alice, bob_pub, b"same", CONTEXT, algorithm=algorithm)
    assert first[: envelope.NONCE_BYTES] != second[: envelope.NONCE_BYTES]
    assert first != second


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(
    "changed",
    [
        envelope.EnvelopeContext(OTHER_SESSION, "alice", "bob", "share-keys"),
        envelope.EnvelopeContext(SESSION, "carol", "bob", "share-keys"),
        envelope.EnvelopeContext(SESSION, "alice", "carol", "share-keys"),
        envelope.EnvelopeContext(SESSION, "alice", "bob", "unmask"),
        envelope.EnvelopeContext(SESSION, "bob", "alice", "share-keys"),
    ],
    ids=["session", "sender", "recipient", "stage", "swapped"],
)
def test_unseal_in_another_context_raises(
    parties: dict[str, tuple[X25519PrivateKey, bytes]],
    algorithm: envelope.AeadAlgorithm,
    changed: envelope.EnvelopeContext,
) -> None:
    alice, alice_pub = parties["alice"]
    bob, bob_pub = parties["bob"]
    sealed = envelope.seal(alice, bob_pub, b"share", CONTEXT, algorithm=algorithm)
    with pytest.raises(DecryptionError):
        envelope.unseal(bob, alice_pub, sealed, changed, algorithm=algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_flipped_byte_raises(
    parties: dict[str, tuple[X25519PrivateKey, bytes]], algorithm: envelope.AeadAlgorithm
) -> None:
    alice, alice_pub = parties["alice"]
    bob, bob_pub = parties["bob"]
    sealed = envelope.seal(alice, bob_pub, b"sixteen byte msg", CONTEXT, algorithm=algorithm)
    for position in range(len(sealed)):  # nonce, ciphertext and tag
        for bit in (0x01, 0x80):
            tampered = bytearray(sealed)
            tampered[position] ^= bit
            with pytest.raises(DecryptionError):
                envelope.unseal(bob, alice_pub, bytes(tampered), CONTEXT, algorithm=algorithm)
    with pytest.raises(DecryptionError):
        envelope.unseal(bob, alice_pub, sealed[:-1], CONTEXT, algorithm=algorithm)
    with pytest.raises(DecryptionError):
        envelope.unseal(bob, alice_pub, sealed + b"\x00", CONTEXT, algorithm=algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_wrong_keys_raise(
    parties: dict[str, tuple[X25519PrivateKey, bytes]], algorithm: envelope.AeadAlgorithm
) -> None:
    alice, alice_pub = parties["alice"]
    bob, bob_pub = parties["bob"]
    mallory, mallory_pub = parties["mallory"]
    sealed = envelope.seal(alice, bob_pub, b"share", CONTEXT, algorithm=algorithm)
    with pytest.raises(DecryptionError):
        envelope.unseal(mallory, alice_pub, sealed, CONTEXT, algorithm=algorithm)
    with pytest.raises(DecryptionError):
        envelope.unseal(bob, mallory_pub, sealed, CONTEXT, algorithm=algorithm)


def test_other_algorithm_raises(parties: dict[str, tuple[X25519PrivateKey, bytes]]) -> None:
    alice, alice_pub = parties["alice"]
    bob, bob_pub = parties["bob"]
    aes, chacha = envelope.AeadAlgorithm.AES_256_GCM, envelope.AeadAlgorithm.CHACHA20_POLY1305
    sealed = envelope.seal(alice, bob_pub, b"share", CONTEXT, algorithm=aes)
    with pytest.raises(DecryptionError):
        envelope.unseal(bob, alice_pub, sealed, CONTEXT, algorithm=chacha)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("length", [0, 1, envelope.NONCE_BYTES, 27])
def test_too_short_envelope_raises(
    parties: dict[str, tuple[X25519PrivateKey, bytes]],
    algorithm: envelope.AeadAlgorithm,
    length: int,
) -> None:
    _, alice_pub = parties["alice"]
    bob, _ = parties["bob"]
    with pytest.raises(DecryptionError, match="shorter"):
        envelope.unseal(bob, alice_pub, bytes(length), CONTEXT, algorithm=algorithm)


@pytest.mark.parametrize(
    "low_order",
    [bytes(32), (1).to_bytes(32, "little")],
    ids=["zero", "one"],
)
def test_low_order_public_key_raises_crypto_error(
    parties: dict[str, tuple[X25519PrivateKey, bytes]], low_order: bytes
) -> None:
    alice, _ = parties["alice"]
    with pytest.raises(CryptoError, match="low-order"):
        envelope.agree(alice, low_order)
    with pytest.raises(CryptoError):
        envelope.seal(alice, low_order, b"share", CONTEXT)
    with pytest.raises(CryptoError):
        envelope.unseal(alice, low_order, bytes(64), CONTEXT)


@pytest.mark.parametrize("raw", [b"", bytes(31), bytes(33), "0" * 32])
def test_malformed_public_key_raises_crypto_error(
    parties: dict[str, tuple[X25519PrivateKey, bytes]], raw: object
) -> None:
    alice, _ = parties["alice"]
    with pytest.raises(CryptoError):
        envelope.agree(alice, raw)  # type: ignore[arg-type]


def test_bad_nonce_length_raises_config_error(
    parties: dict[str, tuple[X25519PrivateKey, bytes]],
) -> None:
    alice, _ = parties["alice"]
    _, bob_pub = parties["bob"]
    for nonce in (b"", bytes(11), bytes(13)):
        with pytest.raises(ConfigError, match="nonce"):
            envelope.seal(alice, bob_pub, b"share", CONTEXT, nonce=nonce)


def test_decryption_errors_are_fedveil_crypto_errors() -> None:
    assert issubclass(DecryptionError, CryptoError)
    assert issubclass(CryptoError, FedveilError)
    assert issubclass(InvalidSignatureError, CryptoError)


# --- Identity ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signers() -> tuple[identity.SigningIdentity, identity.SigningIdentity]:
    return identity.SigningIdentity.generate(), identity.SigningIdentity.generate()


def test_sign_verify_returns_none(
    signers: tuple[identity.SigningIdentity, identity.SigningIdentity],
) -> None:
    alice, _ = signers
    signature = alice.sign(b"statement")
    assert len(signature) == identity.SIGNATURE_BYTES
    assert alice.verifying().verify(signature, b"statement") is None  # type: ignore[func-returns-value]


def test_verify_raises_on_changed_message_signature_or_key(
    signers: tuple[identity.SigningIdentity, identity.SigningIdentity],
) -> None:
    alice, bob = signers
    signature = alice.sign(b"statement")
    with pytest.raises(InvalidSignatureError):
        alice.verifying().verify(signature, b"statemenT")
    with pytest.raises(InvalidSignatureError):
        alice.verifying().verify(signature, b"statement\x00")
    for position in (0, 31, 32, 63):
        tampered = bytearray(signature)
        tampered[position] ^= 0x01
        with pytest.raises(InvalidSignatureError):
            alice.verifying().verify(bytes(tampered), b"statement")
    with pytest.raises(InvalidSignatureError):
        alice.verifying().verify(signature[:-1], b"statement")
    with pytest.raises(InvalidSignatureError):
        alice.verifying().verify(b"", b"statement")
    with pytest.raises(InvalidSignatureError):
        bob.verifying().verify(signature, b"statement")


def test_identity_round_trips_through_private_bytes(
    signers: tuple[identity.SigningIdentity, identity.SigningIdentity],
) -> None:
    alice, _ = signers
    again = identity.SigningIdentity.from_private_bytes(alice.private_bytes())
    assert again.verifying() == alice.verifying()
    assert again.sign(b"m") == alice.sign(b"m")


def test_bad_key_lengths_raise_config_error() -> None:
    with pytest.raises(ConfigError):
        identity.VerifyingIdentity(bytes(31))
    with pytest.raises(ConfigError):
        identity.SigningIdentity.from_private_bytes(bytes(33))


def test_advertisement_message_binds_every_field() -> None:
    enc, mask = bytes(range(32)), bytes(range(32, 64))
    commit = bytes(range(64, 96))
    base = identity.advertisement_message(SESSION, "alice", enc, mask, commit)
    assert base == identity.advertisement_message(SESSION, "alice", enc, mask, commit)
    variants = [
        identity.advertisement_message(OTHER_SESSION, "alice", enc, mask, commit),
        identity.advertisement_message(SESSION, "bob", enc, mask, commit),
        identity.advertisement_message(SESSION, "alice", mask, enc, commit),
        identity.advertisement_message(SESSION, "alice", enc, bytes(32), commit),
        identity.advertisement_message(SESSION, "alice", enc, mask, bytes(32)),
    ]
    assert len({base, *variants}) == 1 + len(variants)


def test_survivor_set_message_is_order_independent_and_session_bound(
    signers: tuple[identity.SigningIdentity, identity.SigningIdentity],
) -> None:
    survivors = ["carol", "alice", "bob"]
    message = identity.survivor_set_message(SESSION, survivors)
    assert message == identity.survivor_set_message(SESSION, reversed(survivors))
    assert message == identity.survivor_set_message(SESSION, {"bob", "carol", "alice"})
    assert message != identity.survivor_set_message(OTHER_SESSION, survivors)
    assert message != identity.survivor_set_message(SESSION, ["alice", "bob"])
    assert identity.survivor_set_message(SESSION, ["a", "bc"]) != (
        identity.survivor_set_message(SESSION, ["ab", "c"])
    )
    advert = identity.advertisement_message(SESSION, "alice", bytes(32), bytes(32), bytes(32))
    assert message != advert
    alice, _ = signers
    signature = alice.sign(message)
    alice.verifying().verify(signature, identity.survivor_set_message(SESSION, sorted(survivors)))
    with pytest.raises(InvalidSignatureError):
        alice.verifying().verify(signature, identity.survivor_set_message(OTHER_SESSION, survivors))
