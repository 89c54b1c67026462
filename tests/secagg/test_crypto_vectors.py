"""Known-answer tests: the crypto core reproduces the committed vectors byte for byte.

Why: masks, derived keys, shares, envelopes and signed statements cross the wire and must
agree between every client and the server, across versions. The JSON files under
tests/secagg/vectors/ are the source of truth; this module only compares against them (it never
regenerates them). The published vectors at the end pin the primitives themselves
(AES-256-CTR, X25519, Ed25519, HKDF) to their standards.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedveil.secagg.crypto import envelope, identity, kdf, prg, shamir
from fedveil.secagg.crypto.encoding import encode_fields

VECTORS = Path(__file__).resolve().parent / "vectors"


@cache
def _load(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


def _cases(name: str, key: str = "cases") -> list[dict[str, Any]]:
    return _load(name)[key]


def _ids(prefix: str, cases: list[dict[str, Any]]) -> list[str]:
    return [f"{prefix}{i}" for i in range(len(cases))]


class HashStream:
    """The deterministic randomness named in shamir.json (see its description)."""

    def __init__(self, label: bytes, prefix: bytes = b"") -> None:
        self._label = label
        self._buffer = bytearray(prefix)
        self._counter = 0

    def __call__(self, nbytes: int) -> bytes:
        while len(self._buffer) < nbytes:
            block = self._label + self._counter.to_bytes(8, "big")
            self._buffer += hashlib.sha256(block).digest()
            self._counter += 1
        out = bytes(self._buffer[:nbytes])
        del self._buffer[:nbytes]
        return out


@pytest.mark.parametrize(
    "name", ["prg.json", "kdf.json", "shamir.json", "envelope.json", "identity.json"]
)
def test_vector_file_is_well_formed(name: str) -> None:
    data = _load(name)
    assert isinstance(data["description"], str) and data["description"]
    assert isinstance(data["cases"], list) and data["cases"]


# --- PRG -----------------------------------------------------------------------------

PRG_CASES = _cases("prg.json")


def _le_bytes(values: np.ndarray) -> bytes:
    return values.astype(values.dtype.newbyteorder("<")).tobytes()


def test_prg_vectors_were_made_with_the_current_chunk_size() -> None:
    assert _load("prg.json")["chunk_bytes"] == prg.CHUNK_BYTES


def test_prg_vectors_cover_chunk_boundaries() -> None:
    counts = {(c["dtype"], c["count"]) for c in PRG_CASES}
    per_chunk = {d: prg.CHUNK_BYTES // np.dtype(d).itemsize for d in ("uint16", "uint32", "uint64")}
    assert ("uint32", 100_003) in counts
    assert any(n % per_chunk[d] for d, n in counts if n > per_chunk[d])
    assert {d for d, _ in counts} == set(per_chunk)
    assert {c["subtract"] for c in PRG_CASES} == {True, False}


@pytest.mark.parametrize("case", PRG_CASES, ids=_ids("prg", PRG_CASES))
@pytest.mark.parametrize("chunk_bytes", [prg.CHUNK_BYTES, 4112])
def test_prg_mask_vector(case: dict[str, Any], chunk_bytes: int) -> None:
    seed = bytes.fromhex(case["seed"])
    assert case["initial"] == "arange"
    acc = np.arange(case["count"], dtype=np.uint64).astype(np.dtype(case["dtype"]))
    prg.MaskExpander(chunk_bytes).apply(acc, seed, subtract=case["subtract"])
    result = _le_bytes(acc)
    if "expected" in case:
        assert result.hex() == case["expected"]
    else:
        assert result[:64].hex() == case["expected_first_64"]
        assert hashlib.sha256(result).hexdigest() == case["expected_sha256"]


@pytest.mark.parametrize("case", PRG_CASES, ids=_ids("prg", PRG_CASES))
def test_prg_add_mask_vector(case: dict[str, Any]) -> None:
    acc = np.arange(case["count"], dtype=np.uint64).astype(np.dtype(case["dtype"]))
    prg.add_mask(acc, bytes.fromhex(case["seed"]), subtract=case["subtract"])
    result = _le_bytes(acc)
    if "expected" in case:
        assert result.hex() == case["expected"]
    else:
        assert hashlib.sha256(result).hexdigest() == case["expected_sha256"]


@pytest.mark.parametrize("case", PRG_CASES, ids=_ids("prg", PRG_CASES))
def test_prg_keystream_vector(case: dict[str, Any]) -> None:
    assert prg.keystream(bytes.fromhex(case["seed"]), 64).hex() == case["keystream_first_64"]


UNIFORM_CASES = _cases("prg.json", "uniform_cases")


@pytest.mark.parametrize("case", UNIFORM_CASES, ids=_ids("uniform", UNIFORM_CASES))
def test_uniform_unit_interval_vector(case: dict[str, Any]) -> None:
    values = prg.uniform_unit_interval(bytes.fromhex(case["seed"]), case["count"])
    assert values.dtype == np.float64
    assert _le_bytes(values).hex() == case["expected_float64_le"]


# --- KDF -----------------------------------------------------------------------------

KDF_CASES = _cases("kdf.json")


def _context(spec: list[list[Any]]) -> tuple[bytes | str | int, ...]:
    decode: dict[str, Callable[[Any], bytes | str | int]] = {
        "str": str,
        "bytes": bytes.fromhex,
        "int": int,
    }
    return tuple(decode[kind](value) for kind, value in spec)


def test_kdf_vectors_cover_every_purpose() -> None:
    assert {c["purpose"] for c in KDF_CASES} == set(kdf.Purpose.__members__)


@pytest.mark.parametrize("case", KDF_CASES, ids=_ids("kdf", KDF_CASES))
def test_kdf_vector(case: dict[str, Any]) -> None:
    purpose = kdf.Purpose[case["purpose"]]
    assert purpose.value == case["label"]
    key = kdf.derive_key(
        bytes.fromhex(case["secret"]),
        purpose,
        bytes.fromhex(case["session_id"]),
        *_context(case["context"]),
        length=case["length"],
    )
    assert key.hex() == case["expected"]


# --- Shamir --------------------------------------------------------------------------

SHAMIR_CASES = _cases("shamir.json")


@pytest.mark.parametrize("case", SHAMIR_CASES, ids=_ids("shamir", SHAMIR_CASES))
def test_shamir_split_vector(case: dict[str, Any]) -> None:
    stream = HashStream(case["random_label"].encode("ascii"), bytes.fromhex(case["random_prefix"]))
    secrets = [bytes.fromhex(s) for s in case["secrets"]]
    dealt = shamir.split_many(secrets, case["threshold"], case["xs"], random_bytes=stream)
    assert [[s.x for s in shares] for shares in dealt] == [case["xs"]] * len(secrets)
    assert [[s.y.hex() for s in shares] for shares in dealt] == case["expected_shares"]
    if len(secrets) == 1:
        again = HashStream(
            case["random_label"].encode("ascii"), bytes.fromhex(case["random_prefix"])
        )
        single = shamir.split(secrets[0], case["threshold"], case["xs"], random_bytes=again)
        assert [s.y.hex() for s in single] == case["expected_shares"][0]


@pytest.mark.parametrize("case", SHAMIR_CASES, ids=_ids("shamir", SHAMIR_CASES))
def test_shamir_combine_vector(case: dict[str, Any]) -> None:
    assert case["combine"]
    for entry in case["combine"]:
        shares = [shamir.Share(x=x, y=bytes.fromhex(y)) for x, y in entry["shares"]]
        rebuilt = shamir.combine(shares, case["threshold"])
        assert rebuilt.hex() == entry["expected"] == case["secrets"][entry["secret_index"]]


def test_shamir_vectors_exercise_rejection_sampling() -> None:
    assert any(c["random_prefix"] for c in SHAMIR_CASES)


# --- Envelope ------------------------------------------------------------------------

ENVELOPE_CASES = _cases("envelope.json")


def _x25519(private_hex: str) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(bytes.fromhex(private_hex))


def _raw_public(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def _envelope_context(case: dict[str, Any]) -> envelope.EnvelopeContext:
    return envelope.EnvelopeContext(
        bytes.fromhex(case["session_id"]), case["sender"], case["recipient"], case["stage"]
    )


def test_envelope_vectors_cover_every_algorithm() -> None:
    assert {c["algorithm"] for c in ENVELOPE_CASES} == set(envelope.AeadAlgorithm.__members__)


@pytest.mark.parametrize("case", ENVELOPE_CASES, ids=_ids("envelope", ENVELOPE_CASES))
def test_envelope_seal_vector(case: dict[str, Any]) -> None:
    sender = _x25519(case["sender_private"])
    recipient = _x25519(case["recipient_private"])
    assert _raw_public(sender).hex() == case["sender_public"]
    assert _raw_public(recipient).hex() == case["recipient_public"]
    shared = envelope.agree(sender, bytes.fromhex(case["recipient_public"]))
    assert shared.hex() == case["shared_secret"]
    context = _envelope_context(case)
    assert context.associated_data().hex() == case["associated_data"]
    key = kdf.derive_key(
        shared, kdf.Purpose.ENVELOPE, context.session_id, context.sender, context.recipient
    )
    assert key.hex() == case["envelope_key"]
    sealed = envelope.seal(
        sender,
        bytes.fromhex(case["recipient_public"]),
        bytes.fromhex(case["plaintext"]),
        context,
        algorithm=envelope.AeadAlgorithm[case["algorithm"]],
        nonce=bytes.fromhex(case["nonce"]),
    )
    assert sealed.hex() == case["expected"]


@pytest.mark.parametrize("case", ENVELOPE_CASES, ids=_ids("envelope", ENVELOPE_CASES))
def test_envelope_unseal_vector(case: dict[str, Any]) -> None:
    opened = envelope.unseal(
        _x25519(case["recipient_private"]),
        bytes.fromhex(case["sender_public"]),
        bytes.fromhex(case["expected"]),
        _envelope_context(case),
        algorithm=envelope.AeadAlgorithm[case["algorithm"]],
    )
    assert opened.hex() == case["plaintext"]


# --- Identity ------------------------------------------------------------------------

IDENTITY_CASES = _cases("identity.json")


def _statement(case: dict[str, Any]) -> bytes:
    if case["kind"] == "raw":
        return bytes.fromhex(case["message"])
    if case["kind"] == "advertisement":
        return identity.advertisement_message(
            bytes.fromhex(case["session_id"]),
            case["client_id"],
            bytes.fromhex(case["encryption_key"]),
            bytes.fromhex(case["masking_key"]),
            bytes.fromhex(case["self_mask_commitment"]),
        )
    assert case["kind"] == "survivor_set"
    return identity.survivor_set_message(bytes.fromhex(case["session_id"]), case["survivors"])


@pytest.mark.parametrize("case", IDENTITY_CASES, ids=_ids("identity", IDENTITY_CASES))
def test_identity_vector(case: dict[str, Any]) -> None:
    signer = identity.SigningIdentity.from_private_bytes(bytes.fromhex(case["private_key"]))
    assert signer.verifying().public_bytes.hex() == case["public_key"]
    message = _statement(case)
    assert message.hex() == case["expected_message"]
    signature = signer.sign(message)
    assert signature.hex() == case["expected_signature"]
    verifier = identity.VerifyingIdentity(bytes.fromhex(case["public_key"]))
    assert verifier.verify(bytes.fromhex(case["expected_signature"]), message) is None  # type: ignore[func-returns-value]


def test_identity_vectors_cover_every_statement_kind() -> None:
    assert {c["kind"] for c in IDENTITY_CASES} == {"raw", "advertisement", "survivor_set"}


# --- Published vectors for the primitives --------------------------------------------


def test_aes256_ctr_nist_sp800_38a_f55() -> None:
    """NIST SP 800-38A F.5.5 CTR-AES256.Encrypt: the cipher mode the PRG is built on."""
    key = bytes.fromhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
    counter = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
    plaintext = bytes.fromhex(
        "6bc1bee22e409f96e93d7e117393172a"
        "ae2d8a571e03ac9c9eb76fac45af8e51"
        "30c81c46a35ce411e5fbc1191a0a52ef"
        "f69f2445df4f9b17ad2b417be66c3710"
    )
    ciphertext = bytes.fromhex(
        "601ec313775789a5b7a7f504bbf3d228"
        "f443e3ca4d62b59aca84e990cacaf5c5"
        "2b0930daa23de94ce87017ba2d84988d"
        "dfc9c58db67aada613c2dd08457941a6"
    )
    encryptor = Cipher(algorithms.AES(key), modes.CTR(counter)).encryptor()
    # Fed in odd pieces, as the PRG feeds chunks: CTR state carries across update calls.
    out = encryptor.update(plaintext[:5]) + encryptor.update(plaintext[5:37])
    out += encryptor.update(plaintext[37:]) + encryptor.finalize()
    assert out == ciphertext


def test_prg_keystream_is_aes256_ctr_from_a_zero_counter() -> None:
    """prg.keystream is exactly AES-256-CTR(seed, counter block 0) over zero bytes."""
    seed = bytes.fromhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
    expected = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor().update(bytes(80))
    assert prg.keystream(seed, 80) == expected


def test_x25519_rfc7748_section_6_1() -> None:
    alice_private = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
    alice_public = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    bob_private = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
    bob_public = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
    shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    alice, bob = _x25519(alice_private), _x25519(bob_private)
    assert _raw_public(alice).hex() == alice_public
    assert _raw_public(bob).hex() == bob_public
    assert envelope.agree(alice, bytes.fromhex(bob_public)).hex() == shared
    assert envelope.agree(bob, bytes.fromhex(alice_public)).hex() == shared


def test_ed25519_rfc8032_test_1() -> None:
    secret = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    public = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    signature = (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555"
        "fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    signer = identity.SigningIdentity.from_private_bytes(secret)
    assert signer.private_bytes() == secret
    assert signer.verifying().public_bytes.hex() == public
    assert signer.sign(b"").hex() == signature
    assert signer.verifying().verify(bytes.fromhex(signature), b"") is None  # type: ignore[func-returns-value]


def test_hkdf_sha256_rfc5869_test_case_1() -> None:
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=42,
        salt=bytes.fromhex("000102030405060708090a0b0c"),
        info=bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
    ).derive(b"\x0b" * 22)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


@pytest.mark.parametrize("case", KDF_CASES, ids=_ids("kdf", KDF_CASES))
def test_kdf_vector_is_documented_hkdf(case: dict[str, Any]) -> None:
    """kdf.json's description holds: plain HKDF-SHA256 with the documented salt and info."""
    info = (
        b"fedveil/v1/" + case["label"].encode("ascii") + encode_fields(*_context(case["context"]))
    )
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=case["length"],
        salt=bytes.fromhex(case["session_id"]),
        info=info,
    ).derive(bytes.fromhex(case["secret"]))
    assert okm.hex() == case["expected"]
