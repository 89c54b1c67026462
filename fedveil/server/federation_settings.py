"""The [federation] table of the server's config: the plan every party must hold.

Why the server reads it: the plan fixes the tensor layout, so the round's dimension and
the root of the model chain follow from it (no hand-typed `--dimension` or model hash),
and the server serves it in every RoundSpec so that parties can check what they hold
before training. `fedveil plan --model-dir DIR` writes the table from the base model
itself (it needs the training stack; the server does not).

Layout::

    [federation]   name, base_model, base_model_hash (hex), rounds, dimension,
                   layout_sha256 (hex)
    [federation.lora]  rank, alpha, target_modules, variant (ffa | fedavg), seed
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from fedveil.errors import ConfigError
from fedveil.secagg.protocol.plan import AdapterPlan, FederationPlan
from fedveil.settings_loader import StrictSettings


def _hex32(value: object, where: str) -> object:
    if not isinstance(value, str):
        return value
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ConfigError(f"{where} is not hex: {value!r}") from None
    if len(raw) != 32:
        raise ConfigError(f"{where} must be 32 bytes (64 hex characters), got {len(raw)}")
    return raw


class FederationLoraTable(StrictSettings):
    """[federation.lora]: the adapter, as `fedveil plan` resolved it on the base model."""

    settings_where: ClassVar[str] = "federation.lora"

    rank: int = Field(ge=1, le=1024)
    alpha: float = Field(gt=0)
    target_modules: tuple[str, ...]
    variant: Literal["ffa", "fedavg"] = "ffa"
    seed: int = Field(default=0, ge=0)

    @field_validator("target_modules", mode="before")
    @classmethod
    def _targets(cls, value: object) -> object:
        return tuple(value) if isinstance(value, list) else value


class FederationTable(StrictSettings):
    """[federation]: the plan; `plan()` is its pure form (secagg.protocol.plan)."""

    settings_where: ClassVar[str] = "federation"

    name: str = Field(min_length=1)
    base_model: str
    base_model_hash: bytes
    rounds: int = Field(ge=0)
    dimension: int = Field(ge=1)
    layout_sha256: bytes
    lora: FederationLoraTable

    @field_validator("base_model_hash", mode="before")
    @classmethod
    def _base_hash(cls, value: object) -> object:
        return _hex32(value, "federation.base_model_hash")

    @field_validator("layout_sha256", mode="before")
    @classmethod
    def _layout(cls, value: object) -> object:
        return _hex32(value, "federation.layout_sha256")

    def plan(self) -> FederationPlan:
        lora = self.lora
        return FederationPlan(
            name=self.name,
            base_model=self.base_model,
            base_model_hash=self.base_model_hash,
            lora=AdapterPlan(
                rank=lora.rank,
                alpha=lora.alpha,
                target_modules=lora.target_modules,
                variant=lora.variant,
                seed=lora.seed,
            ),
            dimension=self.dimension,
            layout_sha256=self.layout_sha256,
            rounds=self.rounds,
        )
