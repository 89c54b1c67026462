"""The audit's axes, and which cells each protection claims to protect.

Why claims are data: a security team must see what leaks where it is expected to
(a plain update is invertible; secure aggregation does not hide what the released
model memorised) next to what must not leak. Only claimed cells can breach a
threshold; the others are reported as expected leaks or as not leaking.
"""

from __future__ import annotations

from collections.abc import Mapping

from fedveil.attacks.protections import PROTECTIONS
from fedveil.errors import ConfigError

UPDATE_ATTACKS: tuple[str, ...] = ("gradient_inversion", "label_leak", "text_recovery")
"""Attacks on what an observer of the round sees (an update or the aggregate)."""

OUTPUT_ATTACKS: tuple[str, ...] = (
    "likelihood_mia",
    "generation_mia",
    "canary_extraction",
    "canary_extraction_filtered",
)
"""Attacks on the released model (its log-probabilities, or only its generated text)."""

ATTACKS: tuple[str, ...] = UPDATE_ATTACKS + OUTPUT_ATTACKS

UPDATE_JOBS: dict[str, tuple[str, ...]] = {
    "gradient_inversion": ("image_inversion", "captioner"),
    "label_leak": ("label_leak",),
    "text_recovery": ("text_recovery", "captioner"),
}
"""The measurements (attacks.measure.update_leakage.RECORD_FUNCTIONS) each update cell reads:
the captioner's records hold both its image and its caption-token attacks."""


def jobs_of(attack: str) -> tuple[str, ...]:
    """The job families whose records judge `attack`'s cells."""
    return ("output",) if attack in OUTPUT_ATTACKS else UPDATE_JOBS[attack]


_DP = ("secagg+client-dp", "dp-sgd")

DEFAULT_CLAIMS: Mapping[str, tuple[str, ...]] = {
    # Nothing protects a plain update or a plainly trained model, except the output filter.
    "none": ("canary_extraction_filtered",),
    # The server (or a key holder) learns only the aggregate of many clients. Nothing
    # stops the released model from memorising: secure aggregation protects inputs.
    "secagg": (*UPDATE_ATTACKS, "canary_extraction_filtered"),
    "ckks": (*UPDATE_ATTACKS, "canary_extraction_filtered"),
    # DP bounds what anything downstream of the noise can learn: updates and outputs.
    "secagg+client-dp": ATTACKS,
    "dp-sgd": ATTACKS,
}


def check_attack(name: str) -> str:
    if name not in ATTACKS:
        raise ConfigError(f"unknown attack {name!r}; choose from {', '.join(ATTACKS)}")
    return name


def check_claims(claims: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """Validate a protection -> claimed attacks table, naming the bad entry."""
    checked: dict[str, tuple[str, ...]] = {}
    for protection, attacks in claims.items():
        if protection not in PROTECTIONS:
            raise ConfigError(
                f"[claims] names unknown protection {protection!r}; "
                f"choose from {', '.join(PROTECTIONS)}"
            )
        checked[protection] = tuple(check_attack(a) for a in attacks)
    return checked


def is_dp(protection: str) -> bool:
    return protection in _DP
