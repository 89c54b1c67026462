"""CKKS (TenSEAL) aggregation: clients encrypt, the server adds ciphertexts it cannot read."""

from fedveil.secagg.ckks.codec import CiphertextSum, decrypt_mean, encrypt_update
from fedveil.secagg.ckks.config import CkksRoundConfig
from fedveil.secagg.ckks.distribution import KeyBinding, open_secret_context, seal_secret_context
from fedveil.secagg.ckks.keys import CkksKeyring, key_epoch
from fedveil.secagg.ckks.presets import PRESETS, CkksPreset, preset

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
