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

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fedveil.attacks.families import (
    FAMILIES,
    MEMBERSHIP_FAMILIES,
    OUTPUT_FAMILIES,
    UPDATE_FAMILIES,
    Family,
    Kind,
    parse_family,
)
from fedveil.attacks.update.base import Attack
from fedveil.errors import ConfigError

if TYPE_CHECKING:
    from fedveil.attacks.output.target import OutputAttack, Score


@dataclass(frozen=True)
class Entry:
    """One registered attack: its name, its family, and the attack itself."""

    name: str
    family: Family
    attack: type[Attack[Any]] | Score

    @property
    def kind(self) -> Kind:
        return self.family.kind


_ATTACKS: dict[str, Entry] = {}
_loaded = False


def _builtin() -> list[Entry]:
    """The built-in attacks, in the order `available()` lists them (per family)."""
    from fedveil.attacks.output.generation import GENERATION_ATTACKS
    from fedveil.attacks.output.likelihood import LIKELIHOOD_ATTACKS
    from fedveil.attacks.output.reference_mia import lira_offline_score, rmia_score
    from fedveil.attacks.output.target import generation_score, likelihood_score
    from fedveil.attacks.update.batch_inversion import BatchInversion
    from fedveil.attacks.update.dlg import DLG
    from fedveil.attacks.update.inverting_gradients import InvertingGradients
    from fedveil.attacks.update.label_leakage import LabelLeakage
    from fedveil.attacks.update.text_recovery import SpanCheck, SubspaceRanking
    from fedveil.attacks.update.text_recovery_ffa import BSpanCheck, BSubspaceRanking
    from fedveil.attacks.update.text_sequence import SequenceSearch
    from fedveil.attacks.update.token_bag import TokenBag

    update: list[tuple[Family, type[Attack[Any]]]] = [
        (Family.INVERSION, DLG),
        (Family.INVERSION, InvertingGradients),
        (Family.INVERSION, BatchInversion),
        (Family.LABELS, LabelLeakage),
        (Family.TEXT, SpanCheck),
        (Family.TEXT, SubspaceRanking),
        (Family.TEXT, BSpanCheck),
        (Family.TEXT, BSubspaceRanking),
        (Family.TEXT, SequenceSearch),
        (Family.TEXT, TokenBag),
    ]
    return [
        *(Entry(cls.name, family, cls) for family, cls in update),
        *(Entry(n, Family.LIKELIHOOD, likelihood_score(n)) for n in LIKELIHOOD_ATTACKS),
        # calibrated by the auditor's reference models (run only where they are attached)
        Entry("rmia", Family.LIKELIHOOD, rmia_score),
        Entry("lira_offline", Family.LIKELIHOOD, lira_offline_score),
        *(Entry(n, Family.GENERATION, generation_score(n)) for n in GENERATION_ATTACKS),
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


def register(name: str, family: Family | str, attack: type[Attack[Any]] | Score) -> None:
    """Make `attack` available as `name`; a name is registered once."""
    _load_builtin()
    _add(Entry(name, parse_family(family), attack))


def available(family: Family | str | None = None, kind: Kind | None = None) -> tuple[str, ...]:
    """Registered names in registration order, optionally of one family or one kind. An
    unknown family is a ConfigError; a family measured without registered score
    functions (extraction) has none."""
    _load_builtin()
    wanted = None if family is None else parse_family(family)
    return tuple(
        n
        for n, e in _ATTACKS.items()
        if (wanted is None or e.family is wanted) and (kind is None or e.kind is kind)
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


__all__ = [
    "FAMILIES",
    "MEMBERSHIP_FAMILIES",
    "OUTPUT_FAMILIES",
    "UPDATE_FAMILIES",
    "Entry",
    "Family",
    "Kind",
    "attack_class",
    "available",
    "create",
    "entry",
    "output_attack",
    "register",
]
