"""What the parties of one CKKS round agree on, and the session id that binds it.

Why a session id here too: the key holder's signed advertisement, the envelopes that
carry the secret context and the ciphertexts' key fingerprint are all tied to one round
and one key epoch. A server that shows two clients different rosters, holders or epochs
gets signatures that do not verify and envelopes that do not open.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

from fedveil.errors import ConfigError
from fedveil.secagg.ckks.codec import chunk_count, weight_scale_for
from fedveil.secagg.ckks.presets import CkksPreset, preset
from fedveil.secagg.crypto.encoding import encode_fields
from fedveil.secagg.crypto.envelope import AeadAlgorithm

_SESSION_TAG = b"fedveil-ckks-session-v1"
MODEL_HASH_BYTES = 32
FINGERPRINT_BYTES = 32


@dataclass(frozen=True)
class CkksRoundConfig:
    """One CKKS round: who takes part, which key epoch, and how values are bounded.

    `key_fingerprint` is empty in a round that distributes the epoch's keys (the first
    round of an epoch); later rounds of the epoch name the fingerprint of the public
    context, so a client knows which of its secret contexts to encrypt under.
    `value_bound` is the clip a client applies before encrypting; with `max_cohort` it
    must fit the preset's headroom, or the encrypted sum could wrap.
    """

    round_id: int
    roster: tuple[str, ...]
    dimension: int
    preset_name: str
    key_epoch: int
    key_holder: str
    max_weight: int
    value_bound: float
    min_cohort: int
    model_hash: bytes
    key_fingerprint: bytes = b""
    aead: AeadAlgorithm = field(default=AeadAlgorithm.AES_256_GCM)

    def __post_init__(self) -> None:
        if not isinstance(self.round_id, int) or self.round_id < 1:
            raise ConfigError(f"round_id must be a positive int, got {self.round_id!r}")
        roster = tuple(sorted(self.roster))
        if len(roster) < 2 or len(set(roster)) != len(roster):
            raise ConfigError("a CKKS round needs at least 2 distinct clients on its roster")
        object.__setattr__(self, "roster", roster)
        if self.key_holder not in roster:
            raise ConfigError(f"key holder {self.key_holder!r} is not on the roster")
        if self.dimension < 1:
            raise ConfigError(f"dimension must be >= 1, got {self.dimension}")
        if self.key_epoch < 0:
            raise ConfigError(f"key_epoch must be >= 0, got {self.key_epoch}")
        if self.max_weight < 1:
            raise ConfigError(f"max_weight must be >= 1, got {self.max_weight}")
        if not 2 <= self.min_cohort <= len(roster):
            raise ConfigError(
                f"min_cohort must be in [2, {len(roster)}] (the roster size), got {self.min_cohort}"
            )
        if len(self.model_hash) != MODEL_HASH_BYTES:
            raise ConfigError(f"model_hash must be {MODEL_HASH_BYTES} bytes")
        if self.key_fingerprint and len(self.key_fingerprint) != FINGERPRINT_BYTES:
            raise ConfigError(f"key_fingerprint must be empty or {FINGERPRINT_BYTES} bytes")
        # raises, naming the preset's headroom, when the cohort's sum could wrap
        weight_scale_for(preset(self.preset_name), len(roster), self.value_bound)

    @property
    def preset(self) -> CkksPreset:
        return preset(self.preset_name)

    @property
    def distributes_keys(self) -> bool:
        """True in the round that hands out a fresh secret context for its epoch."""
        return not self.key_fingerprint

    @property
    def weight_scale(self) -> float:
        """How far client weights are scaled up to use the preset's headroom."""
        return weight_scale_for(self.preset, len(self.roster), self.value_bound)

    @property
    def chunk_count(self) -> int:
        """Ciphertexts per upload (the d values and the weight slot)."""
        return chunk_count(self.dimension, self.preset)

    @cached_property
    def session_id(self) -> bytes:
        return hashlib.sha256(
            encode_fields(
                _SESSION_TAG,
                self.round_id,
                self.dimension,
                self.preset_name,
                self.key_epoch,
                self.key_holder,
                self.max_weight,
                repr(float(self.value_bound)),
                self.min_cohort,
                self.model_hash,
                self.key_fingerprint,
                self.aead.value,
                *self.roster,
            )
        ).digest()
