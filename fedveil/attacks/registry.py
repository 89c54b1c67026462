"""Every attack by name, update and output alike, so benchmarks and audit reports can
select them from the command line.

Why a registry instead of imports at call sites: the leakage benchmark and the audit
report iterate over "every attack that applies to this target", and a new attack is
added here (one row of `_builtin`) without touching either.

Why one explicit table here, and no decorator in the attack modules: the registry
imports the attacks, the attacks never import the registry, so there is no import cycle
and one place lists them all. Each entry has one shape: a name, a family (which says
what the attack observes: an update or the released model's outputs) and the attack:
an `Attack` class for the update families, a score function over an `OutputTarget` for
the output families.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fedveil.attacks.update.base import Attack
from fedveil.errors import ConfigError

if TYPE_CHECKING:
    from fedveil.attacks.output.target import OutputAttack, Score


class Kind(enum.Enum):
    """What an attack observes: one update (or an aggregate of them), or a released model."""

    UPDATE = "update"
    OUTPUT = "output"


FAMILIES: Mapping[str, Kind] = {
    "inversion": Kind.UPDATE,
    "labels": Kind.UPDATE,
    "text": Kind.UPDATE,
    "likelihood": Kind.OUTPUT,
    "generation": Kind.OUTPUT,
}
"""Every family, and what its attacks observe."""

UPDATE_FAMILIES: tuple[str, ...] = tuple(f for f, k in FAMILIES.items() if k is Kind.UPDATE)
OUTPUT_FAMILIES: tuple[str, ...] = tuple(f for f, k in FAMILIES.items() if k is Kind.OUTPUT)


@dataclass(frozen=True)
class Entry:
    """One registered attack: its name, its family, and the attack itself."""

    name: str
    family: str
    attack: type[Attack[Any]] | Score

    @property
    def kind(self) -> Kind:
        return FAMILIES[self.family]


_ATTACKS: dict[str, Entry] = {}
_loaded = False


def _builtin() -> list[Entry]:
    """The built-in attacks, in the order `available()` lists them (per family)."""
    from fedveil.attacks.output.generation import GENERATION_ATTACKS
    from fedveil.attacks.output.likelihood import LIKELIHOOD_ATTACKS
    from fedveil.attacks.output.target import generation_score, likelihood_score
    from fedveil.attacks.update.dlg import DLG
    from fedveil.attacks.update.inverting_gradients import InvertingGradients
    from fedveil.attacks.update.label_leakage import LabelLeakage
    from fedveil.attacks.update.text_recovery import SpanCheck, SubspaceRanking
    from fedveil.attacks.update.text_recovery_ffa import BSpanCheck, BSubspaceRanking

    update: list[tuple[str, type[Attack[Any]]]] = [
        ("inversion", DLG),
        ("inversion", InvertingGradients),
        ("labels", LabelLeakage),
        ("text", SpanCheck),
        ("text", SubspaceRanking),
        ("text", BSpanCheck),
        ("text", BSubspaceRanking),
    ]
    return [
        *(Entry(cls.name, family, cls) for family, cls in update),
        *(Entry(n, "likelihood", likelihood_score(n)) for n in LIKELIHOOD_ATTACKS),
        *(Entry(n, "generation", generation_score(n)) for n in GENERATION_ATTACKS),
    ]


def _load_builtin() -> None:
    # Imported on first use: the output attacks pull in transformers, and `import attacks`
    # should not.
    global _loaded
    if not _loaded:
        _loaded = True
        for entry in _builtin():
            _add(entry)


def _add(entry: Entry) -> None:
    if entry.family not in FAMILIES:
        raise ConfigError(f"family must be one of {tuple(FAMILIES)}, got {entry.family!r}")
    if not entry.name or entry.name in _ATTACKS:
        raise ConfigError(f"attack name {entry.name!r} is empty or already registered")
    is_class = isinstance(entry.attack, type)
    if is_class != (entry.kind is Kind.UPDATE):
        raise ConfigError(
            f"a {entry.family} attack is "
            + ("an Attack class" if entry.kind is Kind.UPDATE else "a score function")
        )
    if is_class and getattr(entry.attack, "name", None) != entry.name:
        raise ConfigError(f"attack class {entry.attack!r} must set `name = {entry.name!r}`")
    _ATTACKS[entry.name] = entry


def register(name: str, family: str, attack: type[Attack[Any]] | Score) -> None:
    """Make `attack` available as `name`; a name is registered once."""
    _load_builtin()
    _add(Entry(name, family, attack))


def available(family: str | None = None, kind: Kind | None = None) -> tuple[str, ...]:
    """Registered names in registration order, optionally of one family or one kind."""
    _load_builtin()
    return tuple(
        n
        for n, e in _ATTACKS.items()
        if (family is None or e.family == family) and (kind is None or e.kind is kind)
    )


def entry(name: str) -> Entry:
    """The registered attack `name`."""
    _load_builtin()
    try:
        return _ATTACKS[name]
    except KeyError:
        raise ConfigError(
            f"unknown attack {name!r}; available: {', '.join(sorted(_ATTACKS))}"
        ) from None


def attack_class(name: str) -> type[Attack[Any]]:
    """The update attack `name`'s class."""
    found = entry(name).attack
    if not isinstance(found, type):
        raise ConfigError(f"{name!r} is an output attack; use output_attack({name!r})")
    return found


def create(name: str, config: object | None = None, **fields: Any) -> Attack[Any]:
    """An update attack instance by name, from a config object or the config's fields."""
    cls = attack_class(name)
    if config is not None and fields:
        raise ConfigError("pass either a config object or config fields, not both")
    if config is None:
        config = cls.config_type(**fields)
    return cls(config)


def output_attack(name: str) -> OutputAttack:
    """The output attack `name`: its family and its score over an `OutputTarget`."""
    from fedveil.attacks.output.target import OutputAttack

    _load_builtin()
    found = _ATTACKS.get(name)
    if found is None or found.kind is not Kind.OUTPUT:
        names = available(kind=Kind.OUTPUT)
        raise ConfigError(f"unknown output attack {name!r}; available: {', '.join(names)}")
    assert not isinstance(found.attack, type)
    return OutputAttack(found.name, found.family, found.attack)
