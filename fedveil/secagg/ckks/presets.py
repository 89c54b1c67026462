"""Named CKKS parameter sets.

Why add-only by default: a client multiplies its update by its own (normalised) weight
before encrypting and sends the weight in one more slot, so the server only adds
ciphertexts. Without a multiplication no rescaling level is consumed, so one 60-bit prime
plus the special prime suffice ([60, 60]): ciphertexts are smaller than with NVIDIA
FLARE's [60, 40, 40] chain, whose server-side plaintext multiply also costs server time
and reveals each client's weight (sizes and times: benchmarks/README.md, ckks_bench).
"""

from __future__ import annotations

from dataclasses import dataclass

from fedveil.errors import ConfigError


@dataclass(frozen=True)
class CkksPreset:
    """One CKKS parameter set: ring degree, modulus chain, scale."""

    name: str
    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int

    def __post_init__(self) -> None:
        if self.poly_modulus_degree not in (4096, 8192, 16384, 32768):
            raise ConfigError(f"poly_modulus_degree {self.poly_modulus_degree} is not supported")
        if len(self.coeff_mod_bit_sizes) < 2:
            raise ConfigError("the modulus chain needs a data prime and the special prime")
        if not 20 <= self.scale_bits < self.coeff_mod_bit_sizes[0]:
            raise ConfigError(
                f"scale_bits={self.scale_bits} must be below the first prime "
                f"({self.coeff_mod_bit_sizes[0]} bits) to leave room for the values"
            )

    @property
    def slot_count(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def headroom_bits(self) -> int:
        """log2 of the largest |sum| an encrypted slot can hold without wrapping."""
        return self.coeff_mod_bit_sizes[0] - self.scale_bits - 1


PRESETS: dict[str, CkksPreset] = {
    p.name: p
    for p in (
        CkksPreset("add-only-8192", 8192, (60, 60), 40),
        CkksPreset("add-only-16384", 16384, (60, 60), 40),
        CkksPreset("nvflare-8192", 8192, (60, 40, 40), 40),
    )
}
DEFAULT_PRESET = "add-only-8192"


def preset(name: str) -> CkksPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown CKKS preset {name!r}; choose one of {sorted(PRESETS)}"
        ) from None
