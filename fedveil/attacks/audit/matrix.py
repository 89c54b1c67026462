"""The audit's axes (protections x attack families), and which cells each protection
claims to protect.

Why the columns are the registry's families: a name seen in report.json is a name
`registry.available()` and the benchmarks accept (attacks.families). Why claims are
data: a security team must see what leaks where it is expected to (a plain update is
invertible; secure aggregation does not hide what the released model memorised) next
to what must not leak. Only claimed cells can breach a threshold; the others are
reported as expected leaks or as not leaking. The default claims are each protection's
own (attacks.protections.PROTECTION_SPECS).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from fedveil.attacks.families import FAMILIES, UPDATE_FAMILIES, Family, Kind, parse_family
from fedveil.attacks.protections import PROTECTIONS, Protection, parse_protection
from fedveil.secagg.modes import DPKind

ATTACKS: tuple[Family, ...] = FAMILIES
"""Every column of the audit, in report order: update families, then output ones."""

UPDATE_ATTACKS: tuple[Family, ...] = UPDATE_FAMILIES
"""Attacks on what an observer of the round sees (an update or the aggregate)."""

UPDATE_JOBS: Mapping[Family, tuple[str, ...]] = MappingProxyType(
    {
        Family.INVERSION: ("image_inversion", "captioner"),
        Family.LABELS: ("label_leak",),
        Family.TEXT: ("text_recovery", "captioner"),
    }
)
"""The measurements (attacks.measure.update_leakage.RECORD_FUNCTIONS) each update column
reads: the captioner's records hold both its image and its caption-token attacks."""

OUTPUT_JOB = "output"
"""The one job of a protection's released model, which every output column reads."""

CANARY_JOB = "dp_canaries"
"""The white-box canary audit of a DP row's mechanism (attacks.output.gradient_canaries)."""

SINGLE_RUN_JOBS = frozenset({OUTPUT_JOB, CANARY_JOB})
"""Jobs that run once, not per seed: their records carry their own confidence bounds."""


def jobs_of(attack: Family) -> tuple[str, ...]:
    """The jobs whose records judge `attack`'s cells."""
    if attack.kind is Kind.MECHANISM:
        return (CANARY_JOB,)
    return (OUTPUT_JOB,) if attack.kind is Kind.OUTPUT else UPDATE_JOBS[attack]


def applies(protection: Protection, attack: Family) -> bool:
    """Whether `attack` has anything to measure on `protection`'s row: the epsilon audit
    only where a DP claim exists; a row that models what the server sees of inputs only
    (ckks+colluder) has no released model of its own."""
    if attack.kind is Kind.MECHANISM:
        return protection.spec.dp in (DPKind.CLIENT, DPKind.SAMPLE)
    if attack.kind is Kind.OUTPUT:
        return not protection.spec.update_only
    return True


DEFAULT_CLAIMS: Mapping[Protection, tuple[Family, ...]] = MappingProxyType(
    {p: p.spec.default_claims for p in PROTECTIONS}
)


def check_attack(name: object) -> Family:
    """`name` as an audit column (an attack family); ConfigError naming the choices."""
    return parse_family(name, "attack")


def check_claims(
    claims: Mapping[Protection, tuple[Family, ...]] | Mapping[str, tuple[str, ...]],
) -> dict[Protection, tuple[Family, ...]]:
    """Validate a protection -> claimed attacks table, naming the bad entry."""
    return {
        parse_protection(protection, "[claims] protection"): tuple(check_attack(a) for a in attacks)
        for protection, attacks in claims.items()
    }
