"""CKKS mode: the server adds ciphertexts it cannot read, and the mean is accurate.

Why these tests: the CKKS claims are "the secret key never reaches the server", "the
decrypted weighted mean matches the plaintext one to 1e-6 of the values' range", "an
upload costs about 8x its fp32 bytes", and "a malformed or foreign ciphertext never
touches the running sum". Each test checks one of them, and the accuracy check is also
shown to fail when a chunk is lost or counted twice, so it can fail.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import pytest
import tenseal as ts
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedveil.errors import ConfigError, DecryptionError, InvalidMessageError
from fedveil.secagg.ckks import (
    PRESETS,
    CiphertextSum,
    CkksKeyring,
    CkksPreset,
    KeyBinding,
    codec,
    decrypt_mean,
    encrypt_update,
    open_secret_context,
    preset,
    seal_secret_context,
)
from fedveil.secagg.ckks.presets import DEFAULT_PRESET

PRESET = preset("add-only-8192")
MAX_WEIGHT = 1000
N_CLIENTS = 10
DIMENSION = 100_000
SMALL_D = 5_000  # two chunks at 4096 slots: the last one is short


@pytest.fixture(scope="module")
def keyring() -> CkksKeyring:
    return CkksKeyring.generate(PRESET)


@pytest.fixture(scope="module")
def public(keyring: CkksKeyring) -> CkksKeyring:
    return keyring.public()


@pytest.fixture(scope="module")
def other_keyring() -> CkksKeyring:
    """Same preset, another key epoch."""
    return CkksKeyring.generate(PRESET)


@dataclass(frozen=True)
class Cohort:
    updates: np.ndarray  # (n, d) float64
    weights: np.ndarray  # (n,) int
    uploads: list[list[bytes]]

    def plain_mean(self) -> np.ndarray:
        return np.average(self.updates, axis=0, weights=self.weights.astype(np.float64))

    def tolerance(self) -> float:
        return 1e-6 * float(np.max(np.abs(self.updates)))


@pytest.fixture(scope="module")
def cohort(keyring: CkksKeyring) -> Cohort:
    """The issue's acceptance setting: n=10, d=1e5, weights in [1, 1000], x ~ N(0, 1)."""
    rng = np.random.default_rng(20240611)
    updates = rng.standard_normal((N_CLIENTS, DIMENSION))
    weights = rng.integers(1, MAX_WEIGHT + 1, size=N_CLIENTS)
    uploads = [
        encrypt_update(keyring, PRESET, updates[i], int(weights[i]), max_weight=MAX_WEIGHT)
        for i in range(N_CLIENTS)
    ]
    return Cohort(updates, weights, uploads)


def _sum_of(
    public: CkksKeyring, uploads: list[list[bytes]], dimension: int, chosen: CkksPreset = PRESET
) -> CiphertextSum:
    total = CiphertextSum(public, chosen, dimension)
    fingerprint = public.fingerprint()
    for upload in uploads:
        for index, data in enumerate(upload):
            total.add(index, total.parse(index, data, fingerprint))
    return total


def _decrypt(keyring: CkksKeyring, total: CiphertextSum) -> tuple[np.ndarray, float]:
    return decrypt_mean(keyring, total.serialised(), total.dimension, max_weight=MAX_WEIGHT)


def _small_cohort(keyring: CkksKeyring, seed: int, n: int = 3) -> Cohort:
    rng = np.random.default_rng(seed)
    updates = rng.uniform(-5.0, 5.0, size=(n, SMALL_D))
    weights = rng.integers(1, MAX_WEIGHT + 1, size=n)
    uploads = [
        encrypt_update(keyring, PRESET, updates[i], int(weights[i]), max_weight=MAX_WEIGHT)
        for i in range(n)
    ]
    return Cohort(updates, weights, uploads)


# --- the server cannot decrypt ---------------------------------------------------------


def test_public_keyring_is_not_private(keyring: CkksKeyring, public: CkksKeyring) -> None:
    assert keyring.is_private is True
    assert public.is_private is False
    # public() is a copy: the original keeps its secret key
    assert keyring.is_private is True


def test_public_context_cannot_decrypt_a_ciphertext(
    keyring: CkksKeyring, public: CkksKeyring
) -> None:
    upload = encrypt_update(keyring, PRESET, np.ones(10), 7, max_weight=MAX_WEIGHT)
    vector = ts.ckks_vector_from(public.context, upload[0])
    with pytest.raises(ValueError, match="secret"):
        vector.decrypt()
    # the same bytes do decrypt under the secret context
    plain = ts.ckks_vector_from(keyring.context, upload[0]).decrypt()
    assert np.allclose(plain[:10], 7 / MAX_WEIGHT, atol=1e-7)


def test_decrypt_mean_refuses_the_public_keyring(keyring: CkksKeyring, public: CkksKeyring) -> None:
    upload = encrypt_update(keyring, PRESET, np.ones(10), 7, max_weight=MAX_WEIGHT)
    with pytest.raises(ConfigError, match="secret"):
        decrypt_mean(public, upload, 10, max_weight=MAX_WEIGHT)


def test_ciphertext_sum_refuses_a_private_keyring(keyring: CkksKeyring) -> None:
    with pytest.raises(ConfigError, match="public"):
        CiphertextSum(keyring, PRESET, 10)


def test_public_bytes_carry_no_secret_key(keyring: CkksKeyring, public: CkksKeyring) -> None:
    reloaded = CkksKeyring.from_bytes(public.to_bytes())
    assert reloaded.is_private is False
    with pytest.raises(ConfigError):
        decrypt_mean(reloaded, [b""], 1, max_weight=MAX_WEIGHT)
    upload = encrypt_update(keyring, PRESET, np.ones(10), 7, max_weight=MAX_WEIGHT)
    with pytest.raises(ValueError, match="secret"):
        ts.ckks_vector_from(reloaded.context, upload[0]).decrypt()
    # the secret keyring's bytes, by contrast, do carry it
    assert CkksKeyring.from_bytes(keyring.to_bytes()).is_private is True


def test_public_bytes_are_smaller_than_secret_bytes(
    keyring: CkksKeyring, public: CkksKeyring
) -> None:
    assert len(public.to_bytes()) < len(keyring.to_bytes())


def test_fingerprint_names_one_key_epoch(keyring: CkksKeyring, public: CkksKeyring) -> None:
    server_side = CkksKeyring.from_bytes(public.to_bytes())
    client_side = CkksKeyring.from_bytes(keyring.to_bytes())
    assert server_side.fingerprint() == public.fingerprint()
    assert keyring.fingerprint() == keyring.fingerprint()
    assert keyring.fingerprint() == public.fingerprint()
    assert client_side.fingerprint() == public.fingerprint()


# --- accuracy (the acceptance test) ----------------------------------------------------


def test_weighted_mean_matches_plaintext(
    keyring: CkksKeyring, public: CkksKeyring, cohort: Cohort
) -> None:
    mean, total_weight = _decrypt(keyring, _sum_of(public, cohort.uploads, DIMENSION))
    assert mean.shape == (DIMENSION,)
    error = float(np.max(np.abs(mean - cohort.plain_mean())))
    assert error <= cohort.tolerance(), f"max abs error {error:.3g} > {cohort.tolerance():.3g}"
    assert abs(total_weight - float(cohort.weights.sum())) <= 1e-3


def test_dropped_chunk_breaks_the_mean(
    keyring: CkksKeyring, public: CkksKeyring, cohort: Cohort
) -> None:
    heaviest = int(np.argmax(cohort.weights))
    total = CiphertextSum(public, PRESET, DIMENSION)
    fingerprint = public.fingerprint()
    for client, upload in enumerate(cohort.uploads):
        for index, data in enumerate(upload):
            if (client, index) != (heaviest, 3):
                total.add(index, total.parse(index, data, fingerprint))
    mean, _ = _decrypt(keyring, total)
    error = float(np.max(np.abs(mean - cohort.plain_mean())))
    assert error > 1000 * cohort.tolerance()


def test_duplicated_chunk_breaks_the_mean(
    keyring: CkksKeyring, public: CkksKeyring, cohort: Cohort
) -> None:
    heaviest = int(np.argmax(cohort.weights))
    total = _sum_of(public, cohort.uploads, DIMENSION)
    total.add(3, total.parse(3, cohort.uploads[heaviest][3], public.fingerprint()))
    mean, total_weight = _decrypt(keyring, total)
    error = float(np.max(np.abs(mean - cohort.plain_mean())))
    assert error > 1000 * cohort.tolerance()
    # the weight chunk was not touched, so the total weight is still right
    assert abs(total_weight - float(cohort.weights.sum())) <= 1e-3


def test_duplicated_weight_chunk_breaks_the_total_weight(
    keyring: CkksKeyring, public: CkksKeyring, cohort: Cohort
) -> None:
    heaviest = int(np.argmax(cohort.weights))
    total = _sum_of(public, cohort.uploads, DIMENSION)
    last = total.count - 1
    total.add(last, total.parse(last, cohort.uploads[heaviest][last], public.fingerprint()))
    _, total_weight = _decrypt(keyring, total)
    assert abs(total_weight - float(cohort.weights.sum())) > 1.0


# --- upload layout and wire cost -------------------------------------------------------


def test_upload_has_one_ciphertext_per_slot_chunk(cohort: Cohort) -> None:
    expected = math.ceil((DIMENSION + 1) / PRESET.slot_count)
    assert codec.chunk_count(DIMENSION, PRESET) == expected
    for upload in cohort.uploads:
        assert len(upload) == expected


@pytest.mark.parametrize("dimension", [1, 4095, 4096, 8191])
def test_chunk_count_at_slot_boundaries(keyring: CkksKeyring, dimension: int) -> None:
    upload = encrypt_update(keyring, PRESET, np.zeros(dimension), 1, max_weight=MAX_WEIGHT)
    assert len(upload) == math.ceil((dimension + 1) / PRESET.slot_count)


def test_wire_cost_is_about_8x_fp32(cohort: Cohort) -> None:
    fp32_bytes = 4 * DIMENSION
    for upload in cohort.uploads:
        ratio = sum(len(chunk) for chunk in upload) / fp32_bytes
        assert 7.0 <= ratio <= 9.0, ratio


# --- bad input never touches the sum ---------------------------------------------------


def _assert_refused(total: CiphertextSum, index: int, data: bytes, fingerprint: bytes) -> None:
    with pytest.raises(InvalidMessageError) as caught:
        total.parse(index, data, fingerprint)
    assert caught.value.grpc_status == "INVALID_ARGUMENT"


def test_parse_refuses_bad_chunks_and_leaves_the_sum_untouched(
    keyring: CkksKeyring, public: CkksKeyring, other_keyring: CkksKeyring
) -> None:
    small = _small_cohort(keyring, seed=1)
    total = CiphertextSum(public, PRESET, SMALL_D)
    fingerprint = public.fingerprint()
    assert total.count == 2
    first, last = small.uploads[0]

    foreign = encrypt_update(other_keyring, PRESET, np.ones(SMALL_D), 5, max_weight=MAX_WEIGHT)
    big = preset("add-only-16384")
    big_keyring = CkksKeyring.generate(big)
    big_upload = encrypt_update(big_keyring, big, np.ones(SMALL_D), 5, max_weight=MAX_WEIGHT)
    assert len(big_upload) == 1

    def refuse_all() -> None:
        _assert_refused(total, 0, b"not a ciphertext", fingerprint)
        _assert_refused(total, 0, b"", fingerprint)
        _assert_refused(total, 0, first[: len(first) // 2], fingerprint)
        _assert_refused(total, 2, first, fingerprint)
        _assert_refused(total, -1, last, fingerprint)
        _assert_refused(total, 0, last, fingerprint)  # wrong size: 905 values, expected 4096
        _assert_refused(total, 1, first, fingerprint)  # wrong size the other way
        _assert_refused(total, 0, foreign[0], other_keyring.fingerprint())  # wrong key epoch
        _assert_refused(total, 0, first, other_keyring.fingerprint())
        _assert_refused(total, 0, big_upload[0], fingerprint)  # another preset

    refuse_all()
    for upload in small.uploads[:2]:
        for index, data in enumerate(upload):
            total.add(index, total.parse(index, data, fingerprint))
    refuse_all()
    for index, data in enumerate(small.uploads[2]):
        total.add(index, total.parse(index, data, fingerprint))
    refuse_all()

    mean, total_weight = _decrypt(keyring, total)
    assert np.max(np.abs(mean - small.plain_mean())) <= small.tolerance()
    assert abs(total_weight - float(small.weights.sum())) <= 1e-3


def test_wrong_size_message_names_the_sizes(keyring: CkksKeyring, public: CkksKeyring) -> None:
    upload = encrypt_update(keyring, PRESET, np.zeros(SMALL_D), 1, max_weight=MAX_WEIGHT)
    total = CiphertextSum(public, PRESET, SMALL_D)
    tail = SMALL_D + 1 - PRESET.slot_count
    with pytest.raises(InvalidMessageError, match=f"{tail} values; expected {PRESET.slot_count}"):
        total.parse(0, upload[1], public.fingerprint())


def test_serialised_refuses_a_sum_with_missing_chunks(
    keyring: CkksKeyring, public: CkksKeyring
) -> None:
    upload = encrypt_update(keyring, PRESET, np.zeros(SMALL_D), 1, max_weight=MAX_WEIGHT)
    total = CiphertextSum(public, PRESET, SMALL_D)
    total.add(0, total.parse(0, upload[0], public.fingerprint()))
    with pytest.raises(ConfigError, match=r"\[1\]"):
        total.serialised()


# --- rollback ---------------------------------------------------------------------------


def test_subtract_rolls_a_client_back(keyring: CkksKeyring, public: CkksKeyring) -> None:
    small = _small_cohort(keyring, seed=2, n=4)
    kept = Cohort(small.updates[:3], small.weights[:3], small.uploads[:3])
    fingerprint = public.fingerprint()

    # the rolled-back client is added in the middle, then subtracted at the end
    total = CiphertextSum(public, PRESET, SMALL_D)
    for upload in (small.uploads[0], small.uploads[3], small.uploads[1], small.uploads[2]):
        for index, data in enumerate(upload):
            total.add(index, total.parse(index, data, fingerprint))
    for index, data in enumerate(small.uploads[3]):
        total.add(index, total.parse(index, data, fingerprint), subtract=True)
    mean, total_weight = _decrypt(keyring, total)

    never_mean, never_weight = _decrypt(keyring, _sum_of(public, kept.uploads, SMALL_D))
    assert np.max(np.abs(mean - never_mean)) <= kept.tolerance()
    assert np.max(np.abs(mean - kept.plain_mean())) <= kept.tolerance()
    assert abs(total_weight - never_weight) <= 1e-3
    assert abs(total_weight - float(kept.weights.sum())) <= 1e-3


def test_subtract_before_add_is_also_a_rollback(keyring: CkksKeyring, public: CkksKeyring) -> None:
    small = _small_cohort(keyring, seed=3, n=3)
    fingerprint = public.fingerprint()
    total = CiphertextSum(public, PRESET, SMALL_D)
    # the rollback of client 0 reaches the sum first (an empty chunk starts at -x); client
    for index, data in enumerate(small.uploads[0]):
        total.add(index, total.parse(index, data, fingerprint), subtract=True)
    for upload in (small.uploads[1], small.uploads[0], small.uploads[2]):
        for index, data in enumerate(upload):
            total.add(index, total.parse(index, data, fingerprint))
    kept = Cohort(small.updates[1:], small.weights[1:], small.uploads[1:])
    mean, total_weight = _decrypt(keyring, total)
    assert np.max(np.abs(mean - kept.plain_mean())) <= kept.tolerance()
    assert abs(total_weight - float(kept.weights.sum())) <= 1e-3


def test_rolling_back_the_only_contributor(keyring: CkksKeyring, public: CkksKeyring) -> None:
    small = _small_cohort(keyring, seed=4, n=2)
    fingerprint = public.fingerprint()
    total = CiphertextSum(public, PRESET, SMALL_D)
    for index, data in enumerate(small.uploads[0]):
        total.add(index, total.parse(index, data, fingerprint))
    for index, data in enumerate(small.uploads[0]):
        total.add(index, total.parse(index, data, fingerprint), subtract=True)
    for index, data in enumerate(small.uploads[1]):
        total.add(index, total.parse(index, data, fingerprint))
    mean, _ = _decrypt(keyring, total)
    assert np.max(np.abs(mean - small.updates[1])) <= 1e-6 * 5.0


def test_add_does_not_mutate_the_callers_vector(keyring: CkksKeyring, public: CkksKeyring) -> None:
    small = _small_cohort(keyring, seed=5, n=2)
    fingerprint = public.fingerprint()
    total = CiphertextSum(public, PRESET, SMALL_D)
    first = total.parse(0, small.uploads[0][0], fingerprint)
    before = bytes(first.serialize())
    total.add(0, first)
    total.add(0, total.parse(0, small.uploads[1][0], fingerprint))
    assert bytes(first.serialize()) == before


# --- client-side input checks ----------------------------------------------------------


@pytest.mark.parametrize(
    ("update", "weight", "kwargs", "match"),
    [
        (np.array([0.0, 1001.0]), 1, {}, "value bound"),
        (np.array([0.0, -1001.0]), 1, {}, "value bound"),
        (np.array([0.5, 2.5]), 1, {"value_bound": 2.0}, "value bound 2"),
        (np.array([0.0, np.nan]), 1, {}, "NaN"),
        (np.array([np.inf, 0.0]), 1, {}, "infinite"),
        (np.array([-np.inf, 0.0]), 1, {}, "infinite"),
        (np.zeros(4), 0, {}, "weight"),
        (np.zeros(4), -3, {}, "weight"),
        (np.zeros(4), MAX_WEIGHT + 1, {}, "weight"),
        (np.zeros((2, 2)), 1, {}, "1-D"),
    ],
)
def test_encrypt_update_refuses_bad_values(
    keyring: CkksKeyring,
    update: np.ndarray,
    weight: int,
    kwargs: dict[str, float],
    match: str,
) -> None:
    with pytest.raises(ConfigError, match=match):
        encrypt_update(keyring, PRESET, update, weight, max_weight=MAX_WEIGHT, **kwargs)


def test_encrypt_update_accepts_the_bounds_themselves(keyring: CkksKeyring) -> None:
    upload = encrypt_update(
        keyring, PRESET, np.array([-1000.0, 1000.0]), MAX_WEIGHT, max_weight=MAX_WEIGHT
    )
    values = np.asarray(ts.ckks_vector_from(keyring.context, upload[0]).decrypt())
    assert np.allclose(values, [-1000.0, 1000.0, 1.0], atol=1e-4)
    assert len(encrypt_update(keyring, PRESET, np.zeros(2), 1, max_weight=MAX_WEIGHT)) == 1


# --- key wrapping -----------------------------------------------------------------------


def _raw(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


@dataclass(frozen=True)
class HandOver:
    holder: X25519PrivateKey
    recipient: X25519PrivateKey
    binding: KeyBinding


@pytest.fixture(scope="module")
def hand_over(keyring: CkksKeyring) -> HandOver:
    binding = KeyBinding(os.urandom(32), 3, "holder", keyring.fingerprint())
    return HandOver(X25519PrivateKey.generate(), X25519PrivateKey.generate(), binding)


def test_sealed_secret_context_round_trips_and_decrypts(
    keyring: CkksKeyring, public: CkksKeyring, hand_over: HandOver
) -> None:
    sealed = seal_secret_context(
        keyring, hand_over.holder, {"alice": _raw(hand_over.recipient)}, hand_over.binding
    )
    opened = open_secret_context(
        "alice",
        hand_over.recipient,
        _raw(hand_over.holder),
        sealed.ciphertext,
        sealed.wrapped_keys["alice"],
        hand_over.binding,
    )
    assert opened.is_private is True
    assert opened.fingerprint() == keyring.fingerprint()

    small = _small_cohort(keyring, seed=6)
    mean, total_weight = decrypt_mean(
        opened,
        _sum_of(public, small.uploads, SMALL_D).serialised(),
        SMALL_D,
        max_weight=MAX_WEIGHT,
    )
    assert np.max(np.abs(mean - small.plain_mean())) <= small.tolerance()
    assert abs(total_weight - float(small.weights.sum())) <= 1e-3

    # and the other way: the opened keyring's uploads decrypt under the original
    upload = encrypt_update(opened, PRESET, small.updates[0], 9, max_weight=MAX_WEIGHT)
    back, weight = decrypt_mean(keyring, upload, SMALL_D, max_weight=MAX_WEIGHT)
    assert np.max(np.abs(back - small.updates[0])) <= 1e-6 * 5.0
    assert abs(weight - 9.0) <= 1e-3


def test_the_secret_context_is_sealed_once_and_each_wrapped_key_is_small(
    keyring: CkksKeyring, hand_over: HandOver
) -> None:
    recipients = {f"c{i}": _raw(X25519PrivateKey.generate()) for i in range(10)}
    sealed = seal_secret_context(keyring, hand_over.holder, recipients, hand_over.binding)
    assert len(sealed.ciphertext) < len(keyring.to_bytes()) + 64
    assert sorted(sealed.wrapped_keys) == sorted(recipients)
    assert {len(w) for w in sealed.wrapped_keys.values()} == {60}


@pytest.mark.parametrize(
    "change",
    [
        "recipient_key",
        "holder_key",
        "session",
        "epoch",
        "holder_name",
        "fingerprint",
        "recipient_name",
        "tamper_context",
        "tamper_wrapped",
        "other_wrapped",
    ],
)
def test_opening_refuses_any_mismatch(
    keyring: CkksKeyring, other_keyring: CkksKeyring, hand_over: HandOver, change: str
) -> None:
    bob = X25519PrivateKey.generate()
    sealed = seal_secret_context(
        keyring,
        hand_over.holder,
        {"alice": _raw(hand_over.recipient), "bob": _raw(bob)},
        hand_over.binding,
    )
    recipient, recipient_key, holder_public = "alice", hand_over.recipient, _raw(hand_over.holder)
    ciphertext, wrapped, b = sealed.ciphertext, sealed.wrapped_keys["alice"], hand_over.binding
    if change == "recipient_key":
        recipient_key = X25519PrivateKey.generate()
    elif change == "holder_key":
        holder_public = _raw(X25519PrivateKey.generate())
    elif change == "session":
        b = KeyBinding(os.urandom(32), b.key_epoch, b.holder, b.fingerprint)
    elif change == "epoch":
        b = KeyBinding(b.session_id, b.key_epoch + 1, b.holder, b.fingerprint)
    elif change == "holder_name":
        b = KeyBinding(b.session_id, b.key_epoch, "mallory", b.fingerprint)
    elif change == "fingerprint":
        b = KeyBinding(b.session_id, b.key_epoch, b.holder, other_keyring.fingerprint())
    elif change == "recipient_name":
        recipient = "bob"
    elif change == "tamper_context":
        ciphertext = ciphertext[:-1] + bytes([ciphertext[-1] ^ 1])
    elif change == "tamper_wrapped":
        wrapped = wrapped[:-1] + bytes([wrapped[-1] ^ 1])
    else:
        wrapped = sealed.wrapped_keys["bob"]
    with pytest.raises(DecryptionError):
        open_secret_context(recipient, recipient_key, holder_public, ciphertext, wrapped, b)


def test_sealing_a_public_keyring_or_a_foreign_fingerprint_is_refused(
    keyring: CkksKeyring, public: CkksKeyring, other_keyring: CkksKeyring, hand_over: HandOver
) -> None:
    recipients = {"alice": _raw(hand_over.recipient)}
    with pytest.raises(ConfigError, match="secret"):
        seal_secret_context(public, hand_over.holder, recipients, hand_over.binding)
    b = hand_over.binding
    foreign = KeyBinding(b.session_id, b.key_epoch, b.holder, other_keyring.fingerprint())
    with pytest.raises(ConfigError, match="fingerprint"):
        seal_secret_context(keyring, hand_over.holder, recipients, foreign)


# --- process-parallel encryption --------------------------------------------------------


def test_workers_give_the_same_values(
    keyring: CkksKeyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    pools: list[int] = []

    class SpyPool(codec.ProcessPoolExecutor):  # type: ignore[name-defined]
        def __init__(self, *args: object, **kwargs: object) -> None:
            pools.append(1)
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(codec, "ProcessPoolExecutor", SpyPool)
    dimension = 4 * PRESET.slot_count  # 5 chunks: enough for two workers (>= 4)
    rng = np.random.default_rng(7)
    update = rng.standard_normal(dimension)

    serial = encrypt_update(keyring, PRESET, update, 321, max_weight=MAX_WEIGHT, workers=1)
    assert pools == []
    parallel = encrypt_update(keyring, PRESET, update, 321, max_weight=MAX_WEIGHT, workers=2)
    assert pools == [1], "workers=2 did not use the process pool"

    assert len(serial) == len(parallel) == 5
    for a, b in zip(serial, parallel, strict=True):
        assert a != b  # fresh encryption randomness
        plain_a = np.asarray(ts.ckks_vector_from(keyring.context, a).decrypt())
        plain_b = np.asarray(ts.ckks_vector_from(keyring.context, b).decrypt())
        assert plain_a.shape == plain_b.shape
        assert np.max(np.abs(plain_a - plain_b)) <= 1e-6
    mean, weight = decrypt_mean(keyring, parallel, dimension, max_weight=MAX_WEIGHT)
    assert np.max(np.abs(mean - update)) <= 1e-6 * float(np.max(np.abs(update)))
    assert abs(weight - 321.0) <= 1e-3


# --- presets ----------------------------------------------------------------------------


def test_unknown_preset_lists_the_names() -> None:
    with pytest.raises(ConfigError) as caught:
        preset("add-only-4096")
    for name in PRESETS:
        assert name in str(caught.value)
    assert "add-only-4096" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "slots", "headroom"),
    [("add-only-8192", 4096, 19), ("add-only-16384", 8192, 19), ("nvflare-8192", 4096, 19)],
)
def test_preset_slot_count_and_headroom(name: str, slots: int, headroom: int) -> None:
    chosen = preset(name)
    assert chosen.slot_count == slots
    assert chosen.headroom_bits == headroom
    assert chosen.name == name


def test_default_preset_is_add_only() -> None:
    assert DEFAULT_PRESET == "add-only-8192"
    assert preset(DEFAULT_PRESET).coeff_mod_bit_sizes == (60, 60)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"poly_modulus_degree": 2048}, "poly_modulus_degree"),
        ({"coeff_mod_bit_sizes": (60,)}, "special prime"),
        ({"scale_bits": 60}, "scale_bits"),
        ({"scale_bits": 10}, "scale_bits"),
    ],
)
def test_preset_validation_names_the_bad_value(kwargs: dict[str, object], match: str) -> None:
    fields: dict[str, object] = {
        "name": "x",
        "poly_modulus_degree": 8192,
        "coeff_mod_bit_sizes": (60, 60),
        "scale_bits": 40,
    }
    fields.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        CkksPreset(**fields)  # type: ignore[arg-type]
