"""Shamir t-of-n secret sharing of 32-byte secrets over GF(2^31 - 1), vectorised.

Why this field: with p = 2^31 - 1 every product of two field elements fits in an int64,
so sharing and reconstruction are plain numpy array arithmetic rather than Python
big-integer loops. A 256-bit secret is cut into 16 limbs of 16 bits; each limb is shared
with its own independent random polynomial of degree t-1, which is Shamir sharing of
each limb and therefore of the whole secret.

Why 16-bit limbs in a 31-bit field: a reconstructed limb must be below 2^16, which
catches a share replaced by random bytes (each of 16 limbs lands in range with
probability 2^-15). It is a sanity check, not authentication: with exactly t shares a
targeted change to one limb goes unnoticed. Integrity comes from elsewhere: with more than
t shares every extra share is checked against the polynomial, and the protocol verifies
each rebuilt secret against a signed commitment (the advertised public key, or the
self-mask commitment) before using it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fedveil.errors import ConfigError, InconsistentSharesError, InsufficientSharesError

PRIME = (1 << 31) - 1
SECRET_BYTES = 32
LIMB_BITS = 16
LIMBS = SECRET_BYTES * 8 // LIMB_BITS
SHARE_BYTES = LIMBS * 4
MAX_SHARES = 1 << 20

RandomBytes = Callable[[int], bytes]


@dataclass(frozen=True)
class Share:
    """One holder's share: the evaluation point x (1-based holder index) and 16 limbs."""

    x: int
    y: bytes

    def __post_init__(self) -> None:
        if not 1 <= self.x < PRIME:
            raise ConfigError(f"share x must be in [1, {PRIME - 1}], got {self.x}")
        if len(self.y) != SHARE_BYTES:
            raise ConfigError(f"share value must be {SHARE_BYTES} bytes, got {len(self.y)}")

    def limbs(self) -> np.ndarray:
        values = np.frombuffer(self.y, dtype=">u4").astype(np.int64)
        if np.any(values >= PRIME):
            raise InconsistentSharesError(
                f"share for x={self.x} holds a value outside GF(2^31 - 1); it was corrupted"
            )
        return values


def _random_field_elements(shape: tuple[int, ...], random_bytes: RandomBytes) -> np.ndarray:
    """Uniform elements of GF(p) by rejection: 31 random bits, reject the one value p."""
    needed = int(np.prod(shape))
    out = np.empty(0, dtype=np.int64)
    while out.size < needed:
        draw = np.frombuffer(random_bytes(4 * (needed - out.size + 8)), dtype="<u4")
        candidates = (draw & np.uint32(PRIME)).astype(np.int64)
        out = np.concatenate([out, candidates[candidates < PRIME]])
    return out[:needed].reshape(shape)


def _secret_limbs(secret: bytes) -> np.ndarray:
    if not isinstance(secret, bytes | bytearray) or len(secret) != SECRET_BYTES:
        raise ConfigError(f"a shared secret must be {SECRET_BYTES} bytes")
    return np.frombuffer(bytes(secret), dtype=">u2").astype(np.int64)


def _check_parameters(threshold: int, xs: Sequence[int]) -> None:
    if threshold < 1:
        raise ConfigError(f"threshold must be >= 1, got {threshold}")
    if len(xs) < threshold:
        raise ConfigError(
            f"cannot deal {len(xs)} shares with threshold {threshold}: "
            "the secret could never be rebuilt; lower the threshold or add holders"
        )
    if len(xs) > MAX_SHARES:
        raise ConfigError(f"at most {MAX_SHARES} shares, got {len(xs)}")
    if len(set(xs)) != len(xs) or any(not 1 <= x < PRIME for x in xs):
        raise ConfigError(f"share points must be distinct and in [1, {PRIME - 1}]: {list(xs)}")


def split_many(
    secrets: Sequence[bytes],
    threshold: int,
    xs: Sequence[int],
    *,
    random_bytes: RandomBytes = os.urandom,
) -> list[list[Share]]:
    """Share each secret t-of-len(xs); result[i][j] is secret i's share for holder xs[j]."""
    _check_parameters(threshold, xs)
    limbs = np.stack([_secret_limbs(s) for s in secrets]) if secrets else np.zeros((0, LIMBS))
    limbs = limbs.astype(np.int64)
    coeffs = _random_field_elements((threshold - 1, len(secrets), LIMBS), random_bytes)
    points = np.asarray(xs, dtype=np.int64)[:, None, None]
    # Horner over all holders and secrets at once: acc has shape (holders, secrets, limbs).
    acc = np.zeros((len(xs), len(secrets), LIMBS), dtype=np.int64)
    for degree in range(threshold - 2, -1, -1):
        acc = (acc * points + coeffs[degree]) % PRIME
    acc = (acc * points + limbs) % PRIME
    values = acc.astype(">u4")
    return [
        [Share(x=int(x), y=values[j, i].tobytes()) for j, x in enumerate(xs)]
        for i in range(len(secrets))
    ]


def split(
    secret: bytes, threshold: int, xs: Sequence[int], *, random_bytes: RandomBytes = os.urandom
) -> list[Share]:
    """Share one 32-byte secret t-of-len(xs) to the holders at points xs."""
    return split_many([secret], threshold, xs, random_bytes=random_bytes)[0]


@functools.lru_cache(maxsize=4096)
def _lagrange_weights(xs: tuple[int, ...], at: int) -> tuple[int, ...]:
    """Lagrange basis polynomials of the points xs evaluated at `at`, in GF(p).

    Cached: a server rebuilds many secrets from the same set of holders, and the O(t^2)
    modular inversions would otherwise dominate unmasking for large neighbourhoods.
    """
    weights = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * (at - xj) % PRIME
                den = den * (xi - xj) % PRIME
        weights.append(num * pow(den, PRIME - 2, PRIME) % PRIME)
    return tuple(weights)


def _interpolate(ys: np.ndarray, weights: Sequence[int]) -> np.ndarray:
    total = np.zeros(LIMBS, dtype=np.int64)
    for weight, y in zip(weights, ys, strict=True):
        total = (total + weight * y) % PRIME
    return total


def combine(shares: Sequence[Share], threshold: int) -> bytes:
    """Rebuild a secret from at least `threshold` shares; raises on too few or bad shares."""
    if threshold < 1:
        raise ConfigError(f"threshold must be >= 1, got {threshold}")
    xs = [share.x for share in shares]
    if len(set(xs)) != len(xs):
        raise InconsistentSharesError(f"duplicate share points {sorted(xs)}")
    if len(shares) < threshold:
        raise InsufficientSharesError(
            f"{len(shares)} shares supplied, {threshold} needed to rebuild the secret"
        )
    ys = np.stack([share.limbs() for share in shares])
    base_x = tuple(xs[:threshold])
    limbs = _interpolate(ys[:threshold], _lagrange_weights(base_x, 0))
    for extra in range(threshold, len(shares)):
        expected = _interpolate(ys[:threshold], _lagrange_weights(base_x, xs[extra]))
        if not np.array_equal(expected, ys[extra]):
            raise InconsistentSharesError(
                f"share for x={xs[extra]} does not lie on the polynomial of the other shares"
            )
    if np.any(limbs >= 1 << LIMB_BITS):
        raise InconsistentSharesError(
            "reconstructed value is out of range: at least one share is wrong or tampered"
        )
    return limbs.astype(">u2").tobytes()
