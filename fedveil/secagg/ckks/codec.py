"""Encrypt a weighted update in slot-sized chunks, add ciphertexts, decrypt the mean.

Layout: the client uploads E(w' x) and E(w') where w' = weight * weight_scale / max_weight.
`weight_scale` (a power of two, see `weight_scale_for`) spends the preset's headroom on
the signal: with w' <= 1 a small client weight would sit near CKKS's absolute noise
floor, and dividing by a small decrypted total weight would amplify that noise. The d + 1
values are cut into chunks of one ciphertext (slot_count values) each, serialised without
the context. The server keeps one running ciphertext per chunk and only adds; whoever holds
the secret context divides the decrypted weighted sum by the decrypted total weight. The
server never sees a client's weight, unlike schemes that multiply by plaintext weights on
the server.

Encryption parallelism: TenSEAL holds the GIL while encrypting one vector, so threads do
not help; `workers > 1` uses processes, each given the serialised secret context once.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import tenseal as ts

from fedveil.errors import ConfigError, InvalidMessageError
from fedveil.secagg.ckks.keys import CkksKeyring
from fedveil.secagg.ckks.presets import CkksPreset

_WORKER_KEYRING: CkksKeyring | None = None


def chunk_count(dimension: int, chosen: CkksPreset) -> int:
    """Ciphertexts per upload: the d update values plus the weight slot."""
    return math.ceil((dimension + 1) / chosen.slot_count)


def weight_scale_for(chosen: CkksPreset, max_cohort: int, value_bound: float) -> float:
    """The largest power of two K with max_cohort * K * max(value_bound, 1) within half
    the headroom: the sum of every client's w' x (and of w' <= K) then cannot wrap."""
    if max_cohort < 1 or not value_bound > 0:
        raise ConfigError(
            f"need max_cohort >= 1 and value_bound > 0, got {max_cohort}, {value_bound}"
        )
    budget = 2.0 ** (chosen.headroom_bits - 1) / (max_cohort * max(value_bound, 1.0))
    if budget < 1.0:
        raise ConfigError(
            f"{max_cohort} clients x value bound {value_bound:g} leave no headroom in preset "
            f"{chosen.name}: clip harder or use fewer clients"
        )
    return 2.0 ** math.floor(math.log2(budget))


def _plain_values(
    update: np.ndarray, weight: int, max_weight: int, value_bound: float, weight_scale: float
) -> np.ndarray:
    if update.ndim != 1:
        raise ConfigError(f"update must be a 1-D vector, got shape {update.shape}")
    values = np.asarray(update, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ConfigError("update holds NaN or infinite values")
    largest = float(np.max(np.abs(values))) if values.size else 0.0
    if largest > value_bound:
        raise ConfigError(
            f"|update| reaches {largest:.3g}, above the CKKS value bound {value_bound:g}: clip "
            "the update (the sum of the cohort must stay inside the scale's headroom)"
        )
    if not 1 <= weight <= max_weight:
        raise ConfigError(f"weight must be in [1, {max_weight}], got {weight}")
    share = weight * weight_scale / max_weight
    return np.concatenate([values * share, [share]])


def _encrypt_chunks(values: np.ndarray, slots: int) -> list[bytes]:
    """Encrypt `values` in chunks of `slots` with this process's keyring."""
    assert _WORKER_KEYRING is not None
    context = _WORKER_KEYRING.context
    return [
        bytes(ts.ckks_vector(context, values[i : i + slots]).serialize())
        for i in range(0, values.shape[0], slots)
    ]


def _init_worker(secret: bytes) -> None:
    global _WORKER_KEYRING
    _WORKER_KEYRING = CkksKeyring.from_bytes(secret)


def encrypt_update(
    keyring: CkksKeyring,
    chosen: CkksPreset,
    update: np.ndarray,
    weight: int,
    *,
    max_weight: int,
    value_bound: float = 1e3,
    weight_scale: float = 1.0,
    workers: int = 1,
) -> list[bytes]:
    """The client's upload: one serialised ciphertext per chunk (no context inside)."""
    values = _plain_values(update, weight, max_weight, value_bound, weight_scale)
    slots, count = chosen.slot_count, chunk_count(update.shape[0], chosen)
    if workers <= 1 or count < 2 * workers:
        global _WORKER_KEYRING
        previous, _WORKER_KEYRING = _WORKER_KEYRING, keyring
        try:
            return _encrypt_chunks(values, slots)
        finally:
            _WORKER_KEYRING = previous
    bounds = np.linspace(0, count, workers + 1).astype(int) * slots
    pieces = [values[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]  # slices only
    # forkserver, not fork: forking a process whose other threads (torch's OpenMP pool,
    # a progress bar's monitor) hold a lock deadlocks the child; seen in the test suite.
    with ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("forkserver"),
        initializer=_init_worker,
        initargs=(keyring.to_bytes(),),
    ) as pool:
        parts = pool.map(_encrypt_chunks, pieces, [slots] * workers)
        return [chunk for part in parts for chunk in part]


class CiphertextSum:
    """The server's running sum: one ciphertext per chunk, built with a public context."""

    def __init__(
        self,
        public: CkksKeyring,
        chosen: CkksPreset,
        dimension: int,
        *,
        max_cohort: int | None = None,
        value_bound: float = 1e3,
        weight_scale: float = 1.0,
    ) -> None:
        if public.is_private:
            raise ConfigError("the server-side sum must be built from a public context")
        largest = weight_scale * max(value_bound, 1.0)
        if max_cohort is not None and max_cohort * largest >= 2.0**chosen.headroom_bits:
            raise ConfigError(
                f"{max_cohort} clients x value bound {value_bound:g} can exceed the "
                f"{chosen.headroom_bits}-bit headroom of preset {chosen.name}: lower the value "
                "bound (clip harder) or the cohort"
            )
        self._public = public
        self._fingerprint = public.fingerprint()
        # What every honest, fresh encryption under the round's key carries: two parts
        # at the top data level of the modulus chain, at exactly the preset's scale.
        seal_context = public.context.seal_context().data
        self._top_level = seal_context.first_parms_id()
        self._top_primes = len(seal_context.first_context_data().parms().coeff_modulus())
        self._scale = 2.0**chosen.scale_bits
        self.chosen = chosen
        self.dimension = dimension
        self.count = chunk_count(dimension, chosen)
        self._sums: list[ts.CKKSVector | None] = [None] * self.count

    def _expected_size(self, index: int) -> int:
        slots = self.chosen.slot_count
        return min(slots, self.dimension + 1 - index * slots)

    def parse(self, index: int, data: bytes, fingerprint: bytes) -> ts.CKKSVector:
        """Validate one ciphertext chunk fully before it touches the sum."""
        if fingerprint != self._fingerprint:
            raise InvalidMessageError(
                "the ciphertext names another CKKS key epoch: fetch the round's current keys"
            )
        if not 0 <= index < self.count:
            raise InvalidMessageError(f"chunk {index} is out of range: the upload has {self.count}")
        try:
            vector = ts.ckks_vector_from(self._public.context, data)
        except Exception as exc:  # noqa: BLE001 - TenSEAL raises assorted types on bad bytes
            raise InvalidMessageError(
                f"chunk {index} is not a valid CKKS ciphertext: {exc}"
            ) from exc
        expected = self._expected_size(index)
        parts = vector.ciphertext()
        if len(parts) != 1 or vector.size() != expected:
            raise InvalidMessageError(
                f"chunk {index} encrypts {vector.size()} values; expected {expected}"
            )
        self._check_fresh(index, parts[0])
        return vector

    def _check_fresh(self, index: int, ciphertext: Any) -> None:
        """Refuse what an honest encryption never is: a ciphertext at another scale or
        level would become a chunk's running sum (as its first contribution) or fail
        every later add against it; one of another size or form, or transparent, breaks
        the sum's arithmetic. Nothing here touches the sum."""
        if ciphertext.parms_id() != self._top_level:
            raise InvalidMessageError(
                f"chunk {index} is at another level of the modulus chain "
                f"({ciphertext.coeff_modulus_size()} primes; a fresh encryption under the "
                f"round's key has {self._top_primes}): encrypt afresh, without rescaling"
            )
        if ciphertext.scale != self._scale:
            scale = float(ciphertext.scale)
            shown = f"2^{math.log2(scale):g}" if scale > 0 else repr(scale)
            raise InvalidMessageError(
                f"chunk {index} has scale {shown}; the round's preset "
                f"{self.chosen.name} encrypts at scale 2^{self.chosen.scale_bits}"
            )
        if ciphertext.size() != 2 or not ciphertext.is_ntt_form() or ciphertext.is_transparent():
            raise InvalidMessageError(
                f"chunk {index} is not a fresh two-part CKKS ciphertext in NTT form"
            )

    def add(self, index: int, vector: ts.CKKSVector, *, subtract: bool = False) -> None:
        """Add (or, to roll a client back, subtract) one parsed chunk; `vector` is not
        modified, so a caller may keep it for a later rollback."""
        current = self._sums[index]
        try:
            if current is None:
                # A new vector that shares the public context: CKKSVector.copy() would
                # copy the whole context as well, many times the server's adding work
                # (benchmarks/README.md, ckks_bench).
                negated = -vector
                self._sums[index] = negated if subtract else -negated
            elif subtract:
                current.sub_(vector)
            else:
                current.add_(vector)
        except (RuntimeError, ValueError, TypeError) as exc:
            if current is not None and "transparent" in str(exc):
                # The contributions cancelled exactly (a rollback of the only
                # contributor): the chunk holds nothing again.
                self._sums[index] = None
                return
            # TenSEAL checks before it computes: the sum is unchanged.
            raise InvalidMessageError(
                f"chunk {index} cannot be added to the encrypted sum: {exc}"
            ) from exc

    def serialised(self) -> list[bytes]:
        """The summed ciphertexts, for the clients to decrypt."""
        missing = [i for i, s in enumerate(self._sums) if s is None]
        if missing:
            raise ConfigError(f"no upload contributed chunks {missing[:5]}...")
        return [bytes(s.serialize()) for s in self._sums if s is not None]


def decrypt_mean(
    keyring: CkksKeyring,
    chunks: Sequence[bytes],
    dimension: int,
    *,
    max_weight: int,
    weight_scale: float = 1.0,
) -> tuple[np.ndarray, float]:
    """(weighted mean, total weight) from the summed ciphertexts; needs the secret key.

    The total weight carries CKKS noise (about 1e-9 relative): round it to compare it with
    an integer example count.
    """
    if not keyring.is_private:
        raise ConfigError("decryption needs the secret context")
    parts = [
        np.asarray(ts.ckks_vector_from(keyring.context, data).decrypt(), dtype=np.float64)
        for data in chunks
    ]
    values = np.concatenate(parts)
    if values.shape[0] != dimension + 1:
        raise InvalidMessageError(f"decrypted {values.shape[0]} values; expected {dimension + 1}")
    total_share = values[dimension]
    if not total_share > 0:
        raise InvalidMessageError("the decrypted total weight is not positive")
    return values[:dimension] / total_share, total_share * max_weight / weight_scale
