"""The attack families: one name per kind of leak, shared by the registry, the
benchmarks and the audit's columns.

Why one vocabulary: the audit reports a cell per (protection, family); a reader who sees
"labels" in report.json must be able to run `registry.available("labels")` and find the
same name in the benchmarks' output. When the audit kept its own column names
(gradient_inversion, label_leak, ...) beside the registry's families, the same attack
had two names and nothing checked that they meant the same thing.

Why extraction is a family without registered attacks: canary extraction is one
measurement (greedy decoding of each canary's prefix) rather than a choice of score
functions, so the registry lists no entries under it; its name is still a family, so the
audit, the registry and the benchmarks agree on it. `extraction_filtered` is the same
measurement behind the release's output filters, judged separately because the filters
are a protection of their own.
"""

from __future__ import annotations

import enum

from fedveil.errors import ConfigError


class Kind(enum.Enum):
    """What an attack observes: one update (or an aggregate of them), a released model, or
    the DP mechanism itself (white-box canaries inserted into its input)."""

    UPDATE = "update"
    OUTPUT = "output"
    MECHANISM = "mechanism"


class Family(enum.StrEnum):
    """A kind of leak (the value is the spelling in audit.toml, report.json and the
    registry)."""

    INVERSION = "inversion"
    LABELS = "labels"
    TEXT = "text"
    LIKELIHOOD = "likelihood"
    GENERATION = "generation"
    EXTRACTION = "extraction"
    EXTRACTION_FILTERED = "extraction_filtered"
    EPSILON = "epsilon"  # white-box canaries against a DP row's claimed epsilon

    @property
    def kind(self) -> Kind:
        if self is Family.EPSILON:
            return Kind.MECHANISM
        return Kind.UPDATE if self in _UPDATE else Kind.OUTPUT

    @property
    def membership(self) -> bool:
        """Whether the family scores members against non-members (an AUC, a TPR)."""
        return self in (Family.LIKELIHOOD, Family.GENERATION)


_UPDATE = frozenset({Family.INVERSION, Family.LABELS, Family.TEXT})

FAMILIES: tuple[Family, ...] = tuple(Family)
UPDATE_FAMILIES: tuple[Family, ...] = tuple(f for f in Family if f.kind is Kind.UPDATE)
OUTPUT_FAMILIES: tuple[Family, ...] = tuple(f for f in Family if f.kind is Kind.OUTPUT)
MEMBERSHIP_FAMILIES: tuple[Family, ...] = tuple(f for f in Family if f.membership)
"""The output families whose attacks are registered score functions."""


def parse_family(value: object, what: str = "attack family") -> Family:
    """`value` as a Family; ConfigError naming `what` and the choices otherwise."""
    if isinstance(value, Family):
        return value
    if isinstance(value, str) and value in Family._value2member_map_:
        return Family(value)
    choices = ", ".join(f.value for f in Family)
    raise ConfigError(f"unknown {what} {value!r}; choose from {choices}")
