"""CKKS (TenSEAL) aggregation: clients encrypt, the server adds ciphertexts it cannot read."""

from secagg.ckks.codec import CiphertextSum, decrypt_mean, encrypt_update
from secagg.ckks.config import CkksRoundConfig
from secagg.ckks.distribution import KeyBinding, open_secret_context, seal_secret_context
from secagg.ckks.keys import CkksKeyring, key_epoch
from secagg.ckks.presets import PRESETS, CkksPreset, preset

__all__ = [
    "PRESETS",
    "CiphertextSum",
    "CkksKeyring",
    "CkksPreset",
    "CkksRoundConfig",
    "KeyBinding",
    "decrypt_mean",
    "encrypt_update",
    "key_epoch",
    "open_secret_context",
    "preset",
    "seal_secret_context",
]
