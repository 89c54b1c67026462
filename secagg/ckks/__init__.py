"""CKKS (TenSEAL) aggregation: clients encrypt, the server adds ciphertexts it cannot read."""

from secagg.ckks.codec import CiphertextSum, decrypt_mean, encrypt_update
from secagg.ckks.keys import CkksKeyring, unwrap_secret_context, wrap_secret_context
from secagg.ckks.presets import PRESETS, CkksPreset, preset

__all__ = [
    "PRESETS",
    "CiphertextSum",
    "CkksKeyring",
    "CkksPreset",
    "decrypt_mean",
    "encrypt_update",
    "preset",
    "unwrap_secret_context",
    "wrap_secret_context",
]
