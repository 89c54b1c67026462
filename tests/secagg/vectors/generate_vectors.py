"""Write the known-answer vectors of secagg.crypto from fixed inputs.

Why a script and committed JSON: the JSON files are the source of truth for the wire
behaviour (mask keystream, derived keys, share layout, envelope bytes, signed messages).
`tests/secagg/test_crypto_vectors.py` only compares against them and never regenerates, so any
change of wire behaviour fails a test. Run this script again only for a deliberate,
versioned change of the wire format, and review the JSON diff.

Every input is a constant written here; nothing is random. Shamir splitting takes its
randomness from `HashStream`: SHA-256(label || counter as 8-byte big-endian), counter
from 0, blocks concatenated, optionally preceded by a fixed prefix. Envelopes use fixed
X25519 private keys and an explicit nonce. Ed25519 signing is deterministic.

    python tests/secagg/vectors/generate_vectors.py
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedveil.secagg.crypto import envelope, identity, kdf, prg, shamir

OUT_DIR = Path(__file__).resolve().parent

LARGE_BYTES = 4096
"""Accumulators longer than this are stored as a SHA-256 digest (plus their first 64 bytes)."""


class HashStream:
    """Deterministic byte stream: prefix, then SHA-256(label || counter_be64) blocks."""

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


def _write(name: str, description: str, cases: list[dict[str, Any]], **extra: Any) -> None:
    payload: dict[str, Any] = {"description": description, "cases": cases, **extra}
    path = OUT_DIR / name
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path} ({len(cases)} cases)")


# --- PRG -----------------------------------------------------------------------------

PRG_SEEDS = {
    "counting": bytes.fromhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"),
    "zero": bytes(32),
    "mixed": bytes.fromhex("c0ffee00deadbeef8badf00d0123456789abcdeffedcba9876543210a5a55a5a"),
}

# (seed name, dtype, count, subtract). Chunk sizes in elements with CHUNK_BYTES = 128 KiB:
# uint16 65536, uint32 32768, uint64 16384.
PRG_CASES: list[tuple[str, str, int, bool]] = [
    ("counting", "uint16", 0, False),
    ("counting", "uint16", 1, False),
    ("counting", "uint16", 33, False),
    ("mixed", "uint16", 33, True),
    ("mixed", "uint16", 65_543, False),
    ("counting", "uint32", 1, False),
    ("counting", "uint32", 5, False),
    ("zero", "uint32", 64, False),
    ("mixed", "uint32", 37, True),
    ("counting", "uint32", 32_768, False),
    ("counting", "uint32", 32_769, True),
    ("mixed", "uint32", 100_003, False),
    ("mixed", "uint32", 100_003, True),
    ("counting", "uint64", 3, False),
    ("mixed", "uint64", 9, True),
    ("zero", "uint64", 16_385, False),
    ("counting", "uint64", 40_000, True),
]

UNIFORM_CASES: list[tuple[str, int]] = [("counting", 0), ("counting", 5), ("mixed", 9)]


def initial_accumulator(dtype: str, count: int) -> np.ndarray:
    """Element i is i mod 2^w: a simple, non-zero, non-constant starting point."""
    return np.arange(count, dtype=np.uint64).astype(np.dtype(dtype))


def _le_bytes(values: np.ndarray) -> bytes:
    return values.astype(values.dtype.newbyteorder("<")).tobytes()


def prg_vectors() -> None:
    cases = []
    for seed_name, dtype, count, subtract in PRG_CASES:
        seed = PRG_SEEDS[seed_name]
        acc = initial_accumulator(dtype, count)
        prg.add_mask(acc, seed, subtract=subtract)
        result = _le_bytes(acc)
        case: dict[str, Any] = {
            "seed": seed.hex(),
            "dtype": dtype,
            "count": count,
            "subtract": subtract,
            "initial": "arange",
            "keystream_first_64": prg.keystream(seed, 64).hex(),
        }
        if len(result) > LARGE_BYTES:
            case["expected_sha256"] = hashlib.sha256(result).hexdigest()
            case["expected_first_64"] = result[:64].hex()
        else:
            case["expected"] = result.hex()
        cases.append(case)
    uniform = [
        {
            "seed": PRG_SEEDS[name].hex(),
            "count": count,
            "expected_float64_le": _le_bytes(
                prg.uniform_unit_interval(PRG_SEEDS[name], count)
            ).hex(),
        }
        for name, count in UNIFORM_CASES
    ]
    _write(
        "prg.json",
        "AES-256-CTR mask PRG (secagg.crypto.prg): keystream under the 32-byte seed with an "
        "all-zero initial counter block, read as little-endian words of `dtype`; the "
        "accumulator starts as element i = i mod 2^w ('arange') and the keystream is added "
        "(or subtracted, `subtract`) mod 2^w by add_mask. `expected` is the little-endian "
        "bytes of the result; large results give `expected_sha256` of those bytes and "
        "`expected_first_64`. `keystream_first_64` is prg.keystream(seed, 64). "
        "`uniform_cases`: prg.uniform_unit_interval(seed, count) as little-endian float64.",
        cases,
        chunk_bytes=prg.CHUNK_BYTES,
        uniform_cases=uniform,
    )


# --- KDF -----------------------------------------------------------------------------

KDF_SECRET = bytes.fromhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
KDF_SESSION = bytes.fromhex("5e55105e55105e55105e55105e55105e55105e55105e55105e55105e55105e55")
KDF_SESSION_B = bytes.fromhex("00000000000000000000000000000000000000000000000000000000000000ff")

# A context field is (type, value): "str" text, "bytes" hex, "int" non-negative integer.
ContextSpec = list[tuple[str, Any]]


def _context_fields(spec: ContextSpec) -> tuple[bytes | str | int, ...]:
    fields: list[bytes | str | int] = []
    for kind, value in spec:
        if kind == "str":
            fields.append(value)
        elif kind == "bytes":
            fields.append(bytes.fromhex(value))
        elif kind == "int":
            fields.append(int(value))
        else:
            raise ValueError(kind)
    return tuple(fields)


def kdf_vectors() -> None:
    pair: ContextSpec = [("str", "alice"), ("str", "bob")]
    specs: list[tuple[bytes, kdf.Purpose, bytes, ContextSpec, int]] = [
        (KDF_SECRET, purpose, KDF_SESSION, pair, 32) for purpose in kdf.Purpose
    ]
    specs += [
        (KDF_SECRET, kdf.Purpose.PAIRWISE_MASK, KDF_SESSION_B, pair, 32),
        (KDF_SECRET, kdf.Purpose.SELF_MASK, KDF_SESSION, [], 32),
        (KDF_SECRET, kdf.Purpose.SELF_MASK, KDF_SESSION, [("str", "a"), ("str", "bc")], 32),
        (KDF_SECRET, kdf.Purpose.SELF_MASK, KDF_SESSION, [("str", "ab"), ("str", "c")], 32),
        (KDF_SECRET, kdf.Purpose.PAIRWISE_MASK, KDF_SESSION, [("str", "carol"), ("int", 7)], 32),
        (KDF_SECRET, kdf.Purpose.NEIGHBOUR_GRAPH, KDF_SESSION, [("bytes", "00ff10")], 16),
        (KDF_SECRET, kdf.Purpose.ENVELOPE, KDF_SESSION, pair, 64),
        (bytes.fromhex("01"), kdf.Purpose.ENVELOPE, KDF_SESSION, [("str", "\u00e9t\u00e9")], 32),
    ]
    cases = []
    for secret, purpose, session, context, length in specs:
        key = kdf.derive_key(secret, purpose, session, *_context_fields(context), length=length)
        cases.append(
            {
                "secret": secret.hex(),
                "purpose": purpose.name,
                "label": purpose.value,
                "session_id": session.hex(),
                "context": [[kind, value] for kind, value in context],
                "length": length,
                "expected": key.hex(),
            }
        )
    _write(
        "kdf.json",
        "secagg.crypto.kdf.derive_key: HKDF-SHA256(ikm=secret, salt=session_id, "
        "info='fedveil/v1/' + label + length-prefixed context). `purpose` is the "
        "kdf.Purpose member name and `label` its value. Each context field is [type, value]: "
        "'str' text, 'bytes' hex, 'int' non-negative integer (8 bytes big-endian).",
        cases,
    )


# --- Shamir --------------------------------------------------------------------------

SHAMIR_SECRETS = {
    "counting": bytes.fromhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"),
    "zero": bytes(32),
    "ones": b"\xff" * 32,
    "mixed": bytes.fromhex("c0ffee00deadbeef8badf00d0123456789abcdeffedcba9876543210a5a55a5a"),
}

# (secret names, threshold, xs, random label, random prefix hex, combine subsets as indices)
SHAMIR_CASES: list[tuple[list[str], int, list[int], str, str, list[list[int]]]] = [
    (["counting"], 1, [1], "fedveil-kat/shamir/1", "", [[0]]),
    (["mixed"], 1, [1, 2, 3], "fedveil-kat/shamir/2", "", [[2], [0, 1, 2]]),
    (["counting"], 2, [1, 2, 3], "fedveil-kat/shamir/3", "", [[0, 1], [2, 0], [0, 1, 2]]),
    (["ones"], 3, [1, 2, 3, 4, 5], "fedveil-kat/shamir/4", "", [[4, 2, 0], [0, 1, 2, 3, 4]]),
    (["zero"], 3, [1, 2, 3, 4], "fedveil-kat/shamir/5", "", [[1, 2, 3]]),
    (
        ["mixed"],
        5,
        [3, 7, 11, 1000, (1 << 31) - 2, 65_537],
        "fedveil-kat/shamir/6",
        "",
        [[0, 1, 2, 3, 4], [5, 4, 3, 2, 1], [0, 1, 2, 3, 4, 5]],
    ),
    (
        ["counting", "zero", "ones"],
        3,
        [1, 2, 3, 4],
        "fedveil-kat/shamir/7",
        "",
        [[0, 1, 2], [3, 2, 1, 0]],
    ),
    # The first 31-bit draws are exactly p = 2^31 - 1 (after masking the top bit) and are
    # rejected: pins the rejection sampling of the polynomial coefficients.
    (["mixed"], 2, [1, 2, 3], "fedveil-kat/shamir/8", "ffffffff7fffffff", [[0, 2]]),
]


def shamir_vectors() -> None:
    cases = []
    for names, threshold, xs, label, prefix, subsets in SHAMIR_CASES:
        secrets = [SHAMIR_SECRETS[name] for name in names]
        stream = HashStream(label.encode("ascii"), bytes.fromhex(prefix))
        dealt = shamir.split_many(secrets, threshold, xs, random_bytes=stream)
        combines = []
        for i, shares in enumerate(dealt):
            for subset in subsets:
                chosen = [shares[j] for j in subset]
                rebuilt = shamir.combine(chosen, threshold)
                assert rebuilt == secrets[i]
                combines.append(
                    {
                        "secret_index": i,
                        "shares": [[s.x, s.y.hex()] for s in chosen],
                        "expected": rebuilt.hex(),
                    }
                )
        cases.append(
            {
                "secrets": [s.hex() for s in secrets],
                "threshold": threshold,
                "xs": xs,
                "random_label": label,
                "random_prefix": prefix,
                "expected_shares": [[s.y.hex() for s in shares] for shares in dealt],
                "combine": combines,
            }
        )
    _write(
        "shamir.json",
        "secagg.crypto.shamir.split_many(secrets, threshold, xs, random_bytes=stream) and "
        "combine. The stream is random_prefix bytes followed by SHA-256(random_label (ascii) "
        "|| counter as 8-byte big-endian) for counter = 0, 1, ..., consumed in order across "
        "calls. expected_shares[i][j] is secret i's share value (16 big-endian uint32 limbs) "
        "for holder xs[j]. Each combine entry lists [x, y hex] shares and the rebuilt secret.",
        cases,
    )


# --- Envelope ------------------------------------------------------------------------

ENVELOPE_SENDER_KEY = bytes.fromhex(
    "a8abababababababababababababababababababababababababababababab6b"
)
ENVELOPE_RECIPIENT_KEY = bytes.fromhex(
    "c8cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd4d"
)
ENVELOPE_SESSION = bytes.fromhex("5e55105e55105e55105e55105e55105e55105e55105e55105e55105e55105e55")
ENVELOPE_NONCES = [
    bytes.fromhex("000102030405060708090a0b"),
    bytes.fromhex("ffffffffffffffffffffffff"),
]

ENVELOPE_PLAINTEXTS = [
    b"",
    b"fedveil share payload",
    bytes(range(64)),  # the size of one Shamir share value
]


def _x25519_public(private: bytes) -> bytes:
    return (
        X25519PrivateKey.from_private_bytes(private)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


def envelope_vectors() -> None:
    sender = X25519PrivateKey.from_private_bytes(ENVELOPE_SENDER_KEY)
    recipient_public = _x25519_public(ENVELOPE_RECIPIENT_KEY)
    shared = envelope.agree(sender, recipient_public)
    contexts = [
        envelope.EnvelopeContext(ENVELOPE_SESSION, "alice", "bob", "share-keys"),
        envelope.EnvelopeContext(ENVELOPE_SESSION, "bob", "alice", "unmask"),
    ]
    cases = []
    for algorithm in envelope.AeadAlgorithm:
        for n, plaintext in enumerate(ENVELOPE_PLAINTEXTS):
            context = contexts[n % len(contexts)]
            nonce = ENVELOPE_NONCES[n % len(ENVELOPE_NONCES)]
            sealed = envelope.seal(
                sender, recipient_public, plaintext, context, algorithm=algorithm, nonce=nonce
            )
            key = kdf.derive_key(
                shared, kdf.Purpose.ENVELOPE, context.session_id, context.sender, context.recipient
            )
            cases.append(
                {
                    "algorithm": algorithm.name,
                    "sender_private": ENVELOPE_SENDER_KEY.hex(),
                    "sender_public": _x25519_public(ENVELOPE_SENDER_KEY).hex(),
                    "recipient_private": ENVELOPE_RECIPIENT_KEY.hex(),
                    "recipient_public": recipient_public.hex(),
                    "session_id": context.session_id.hex(),
                    "sender": context.sender,
                    "recipient": context.recipient,
                    "stage": context.stage,
                    "nonce": nonce.hex(),
                    "plaintext": plaintext.hex(),
                    "shared_secret": shared.hex(),
                    "envelope_key": key.hex(),
                    "associated_data": context.associated_data().hex(),
                    "expected": sealed.hex(),
                }
            )
    _write(
        "envelope.json",
        "secagg.crypto.envelope.seal with fixed X25519 keys and an explicit nonce. "
        "`algorithm` is the AeadAlgorithm member name. `shared_secret` = X25519(sender, "
        "recipient); `envelope_key` = derive_key(shared, ENVELOPE, session, sender, "
        "recipient); `expected` = nonce || ciphertext || tag.",
        cases,
    )


# --- Identity ------------------------------------------------------------------------

IDENTITY_KEYS = [
    bytes.fromhex("1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100"),
    bytes.fromhex("7e57ab1e7e57ab1e7e57ab1e7e57ab1e7e57ab1e7e57ab1e7e57ab1e7e57ab1e"),
]
IDENTITY_SESSION = bytes.fromhex("5e55105e55105e55105e55105e55105e55105e55105e55105e55105e55105e55")


def identity_vectors() -> None:
    enc_key = _x25519_public(ENVELOPE_SENDER_KEY)
    mask_key = _x25519_public(ENVELOPE_RECIPIENT_KEY)
    statements: list[dict[str, Any]] = [
        {"kind": "raw", "message": b"".hex()},
        {"kind": "raw", "message": b"fedveil".hex()},
        {
            "kind": "advertisement",
            "session_id": IDENTITY_SESSION.hex(),
            "client_id": "alice",
            "encryption_key": enc_key.hex(),
            "masking_key": mask_key.hex(),
            "self_mask_commitment": bytes(range(100, 132)).hex(),
        },
        {
            "kind": "survivor_set",
            "session_id": IDENTITY_SESSION.hex(),
            "survivors": ["carol", "alice", "bob"],
        },
    ]
    cases = []
    for private in IDENTITY_KEYS:
        signer = identity.SigningIdentity.from_private_bytes(private)
        for statement in statements:
            if statement["kind"] == "raw":
                message = bytes.fromhex(statement["message"])
            elif statement["kind"] == "advertisement":
                message = identity.advertisement_message(
                    bytes.fromhex(statement["session_id"]),
                    statement["client_id"],
                    bytes.fromhex(statement["encryption_key"]),
                    bytes.fromhex(statement["masking_key"]),
                    bytes.fromhex(statement["self_mask_commitment"]),
                )
            else:
                message = identity.survivor_set_message(
                    bytes.fromhex(statement["session_id"]), statement["survivors"]
                )
            cases.append(
                {
                    "private_key": private.hex(),
                    "public_key": signer.verifying().public_bytes.hex(),
                    **statement,
                    "expected_message": message.hex(),
                    "expected_signature": signer.sign(message).hex(),
                }
            )
    _write(
        "identity.json",
        "secagg.crypto.identity: Ed25519 (deterministic) with a fixed 32-byte private key. "
        "`kind` 'raw' signs `message` as given; 'advertisement' signs "
        "advertisement_message(session_id, client_id, encryption_key, masking_key, "
        "self_mask_commitment); "
        "'survivor_set' signs survivor_set_message(session_id, survivors). "
        "`expected_message` is the exact signed bytes.",
        cases,
    )


def main() -> None:
    prg_vectors()
    kdf_vectors()
    shamir_vectors()
    envelope_vectors()
    identity_vectors()


if __name__ == "__main__":
    main()
