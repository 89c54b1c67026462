"""Attacks by name, so benchmarks and audit reports can select them from the command line.

Why a registry instead of imports at call sites: the leakage benchmark and the audit
report iterate over "every attack that applies to this target", and new attacks (the
membership-inference and canary issues) register themselves without touching either.
"""

from __future__ import annotations

from typing import Any, TypeVar

from attacks.base import Attack
from secagg.errors import ConfigError

_ATTACKS: dict[str, type[Attack[Any]]] = {}

A = TypeVar("A", bound=type[Attack[Any]])


def register(cls: A) -> A:
    """Class decorator: make `cls` available under `cls.name`."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{cls.__name__} must set a non-empty class attribute `name`")
    existing = _ATTACKS.get(name)
    if existing is not None and existing is not cls:
        raise ConfigError(
            f"attack name {name!r} is taken by {existing.__module__}.{existing.__name__}"
        )
    _ATTACKS[name] = cls
    return cls


def _load_builtin() -> None:
    # Importing the modules runs their @register decorators.
    import attacks.dlg
    import attacks.inverting_gradients
    import attacks.label_leakage
    import attacks.text_recovery
    import attacks.text_recovery_ffa  # noqa: F401


def available() -> tuple[str, ...]:
    """Names of every registered attack, sorted."""
    _load_builtin()
    return tuple(sorted(_ATTACKS))


def attack_class(name: str) -> type[Attack[Any]]:
    _load_builtin()
    try:
        return _ATTACKS[name]
    except KeyError:
        raise ConfigError(
            f"unknown attack {name!r}; available: {', '.join(sorted(_ATTACKS))}"
        ) from None


def create(name: str, config: object | None = None, **fields: Any) -> Attack[Any]:
    """An attack instance by name, from a config object or the config's fields."""
    cls = attack_class(name)
    if config is not None and fields:
        raise ConfigError("pass either a config object or config fields, not both")
    if config is None:
        config = cls.config_type(**fields)
    return cls(config)
