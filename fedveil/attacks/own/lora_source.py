"""The adapter a delta was trained with: from flags, a `[lora]` table, or a federation plan.

Why three sources: a party knows its adapter from `party.toml`'s `[lora]` table, an
operator from the `federation.toml` that `fedveil plan` wrote, anyone else from the
flags `fedveil plan` takes. The delta's tensor names and shapes follow from the adapter,
so a wrong source shows up as a mismatch that `delta_file` names. A plan also binds the
base model's hash and the layout fingerprint; `PlanBinding` keeps them so the model
directory handed in can be checked against the plan, not assumed to be its base model.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedveil.errors import ConfigError
from fedveil.learner.lora.config import AggregationVariant, LoraSettings

LORA_KEYS = ("rank", "alpha", "target_modules", "variant", "seed", "dropout")


@dataclass(frozen=True)
class PlanBinding:
    """What a federation plan says the base model and the adapter layout hash to."""

    source: Path
    base_model_hash: bytes
    layout_sha256: bytes
    dimension: int


@dataclass(frozen=True)
class AdapterSource:
    """The LoRA settings, where they came from, and the plan's binding if any."""

    settings: LoraSettings
    origin: str
    plan: PlanBinding | None = None


def settings_from_flags(
    rank: int | None,
    alpha: float | None,
    target_modules: tuple[str, ...] | None,
    variant: str | None,
    seed: int | None,
) -> AdapterSource:
    """LoraSettings from command-line values, the library's defaults where None."""
    defaults = LoraSettings()
    return AdapterSource(
        LoraSettings(
            rank=defaults.rank if rank is None else rank,
            alpha=defaults.alpha if alpha is None else float(alpha),
            target_modules=target_modules,
            variant=_variant(defaults.variant.value if variant is None else variant, "--variant"),
            seed=defaults.seed if seed is None else seed,
        ),
        "flags",
    )


def settings_from_file(path: Path, *, key: str = "--lora-config") -> AdapterSource:
    """A federation plan (`[federation.lora]`, from `fedveil plan`) or a `[lora]` table;
    `key` is how the caller spells the option in its errors."""
    if not path.is_file():
        raise ConfigError(f"{key} {path} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{key} {path} is not valid TOML ({exc})") from None
    federation = data.get("federation")
    if isinstance(federation, dict) and isinstance(federation.get("lora"), dict):
        settings = _settings(federation["lora"], f"{path} [federation.lora]")
        return AdapterSource(settings, f"plan {path}", _binding(federation, path))
    if isinstance(data.get("lora"), dict):
        return AdapterSource(_settings(data["lora"], f"{path} [lora]"), f"{path} [lora]")
    raise ConfigError(
        f"{key} {path} has neither a [federation.lora] table (a plan from `fedveil plan`) nor a "
        "[lora] table (rank, alpha, target_modules, variant, seed)"
    )


def settings_from_table(table: dict[str, Any], where: str) -> AdapterSource:
    """A `[lora]`-style table given inline (audit.toml's `[target.lora]`); errors name
    `where`."""
    return AdapterSource(_settings(table, where), where)


def _settings(table: dict[str, Any], where: str) -> LoraSettings:
    unknown = sorted(set(table) - set(LORA_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(LORA_KEYS)})")
    modules = table.get("target_modules")
    if modules is not None and (
        not isinstance(modules, list) or not all(isinstance(m, str) for m in modules)
    ):
        raise ConfigError(f"{where}: target_modules must be a list of module names")
    defaults = LoraSettings()
    try:
        return LoraSettings(
            rank=table.get("rank", defaults.rank),
            alpha=float(table.get("alpha", defaults.alpha)),
            dropout=float(table.get("dropout", 0.0)),
            target_modules=tuple(modules) if modules is not None else None,
            variant=_variant(str(table.get("variant", defaults.variant.value)), where),
            seed=table.get("seed", defaults.seed),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _variant(value: str, where: str) -> AggregationVariant:
    try:
        return AggregationVariant(value)
    except ValueError:
        choices = ", ".join(v.value for v in AggregationVariant)
        raise ConfigError(f"{where}: variant must be one of {choices}, got {value!r}") from None


def _binding(federation: dict[str, Any], path: Path) -> PlanBinding:
    try:
        return PlanBinding(
            path,
            bytes.fromhex(str(federation["base_model_hash"])),
            bytes.fromhex(str(federation["layout_sha256"])),
            int(federation["dimension"]),
        )
    except (KeyError, ValueError) as exc:
        raise ConfigError(
            f"{path} [federation] lacks a valid base_model_hash, layout_sha256 or dimension "
            f"({exc}); write it again with `fedveil plan`"
        ) from None
