"""`audit.toml` -> AuditConfig: what to run, the DP noise, thresholds and claims.

Why strict: an audit that silently ignores a misspelt threshold gates nothing. The file
loads through the one settings loader (fedveil.settings_loader): one StrictSettings model
per section ([audit], [federation], [target], [dp], [thresholds], [claims]) under one
document model, so every unknown section or key, wrong type or out-of-range value is one
ConfigError line naming it (the command exits 2 on those). Errors name keys as the TOML
file spells them, `[dp] clip_norm: must be ...`.

AuditConfig and Thresholds stay frozen dataclasses (the report lists Thresholds' fields);
built directly, they check their values with the same section models.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, get_args

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from fedveil.attacks.audit.matrix import ATTACKS, DEFAULT_CLAIMS, check_attack, check_claims
from fedveil.attacks.audit.observer_rows import ObserverSettings
from fedveil.attacks.families import Family, Kind, parse_family
from fedveil.attacks.protections import PROTECTIONS, DPSettings, Protection, parse_protection
from fedveil.attacks.targets.user_update import UpdateTargetSpec, check_update_target
from fedveil.errors import ConfigError
from fedveil.settings_loader import StrictSettings, load_settings, read_toml

Profile = Literal["quick", "full"]
PROFILES: tuple[str, ...] = get_args(Profile)


@dataclass(frozen=True)
class Thresholds:
    """What a claimed cell may reach before it is a breach.

    AUC and TPR are of the strongest attack of a family; PSNR, SSIM, label accuracy and
    token F1 are measured over their data-free baselines (grey image, chance, a sentence
    from the public generator), so a threshold means "learns this much more than a
    guess". Extraction rates are shares of member canaries emitted verbatim.
    """

    max_auc: float = 0.75
    max_tpr_at_1pct_fpr: float = 0.4
    max_psnr_over_baseline_db: float = 3.0
    max_ssim_over_baseline: float = 0.15
    max_label_acc_over_chance: float = 0.3
    max_token_f1_over_baseline: float = 0.2
    max_extraction_rate: float = 0.05
    empirical_epsilon_within_claimed: bool = True

    def __post_init__(self) -> None:
        _load(ThresholdsSettings, {f.name: getattr(self, f.name) for f in fields(self)})


@dataclass(frozen=True)
class OutputDP:
    """The noise of the DP protections in the federation whose released model the output
    attacks probe ([dp.output]): client DP on each party's whole update per round, DP-SGD
    on each example's gradient per step. Separate from [dp] (the update views and the
    epsilon column) because a party's LoRA delta per round is a much smaller vector than
    one example's gradient: one clip norm cannot serve both."""

    client: DPSettings = field(default_factory=lambda: DPSettings(0.02, 3.0))
    sgd: DPSettings = field(default_factory=lambda: DPSettings(1.0, 2.0))


@dataclass(frozen=True)
class AuditConfig:
    """One audit: which cells to run, the settings they run with, and how to judge them.

    model_dir / texts: a user's local causal-LM directory (save_pretrained) and JSONL
      texts ({"text": ...} per line) for the output attacks; None: the built-in tiny
      GPT-2 and its synthetic texts. canaries: how many to plant.
    records / lora: the text column's update cells on the same model (`fedveil attack`'s
      files): the records JSONL whose leakage through a round is audited, and the
      adapter (a federation plan or [lora] TOML file, an inline [target.lora] table, or
      None for the library's defaults). None: the built-in update targets. With
      records, the inversion and labels columns do not apply (a causal LM's text records
      have no images or class labels) and, without texts, neither do the output ones:
      naming one is a ConfigError, the default column list leaves them out.
    clients: the cohort of the secure aggregate the update attacks observe.
    parties: the federation whose released model the output attacks probe (party 0
      holds the planted canaries). rounds: its FedAvg rounds (None: the profile's).
    dp: clip norm C and noise multiplier z of the DP protections on the update views and
      the epsilon column (per round for client DP, per step for DP-SGD), and delta.
    dp_output: the same for the federation the output attacks probe ([dp.output]).
    top_records: how many of each membership or extraction cell's records, ranked most
      exposed first, the report lists (report.json keeps the same N).
    reference_models: K, the auditor's OUT models the likelihood column's RMIA and
      offline LiRA are calibrated by (0: neither runs; None: the profile's, quick 2 and
      full 4, attacks.measure.output_leakage.OutputLeakageSettings).
    """

    protections: tuple[Protection, ...] = PROTECTIONS
    attacks: tuple[Family, ...] = ATTACKS
    profile: str = "quick"
    seed: int = 0
    top_records: int = 10
    reference_models: int | None = None
    clients: int = 10
    parties: int = 3
    rounds: int | None = None
    model_dir: Path | None = None
    texts: Path | None = None
    canaries: int | None = None
    records: Path | None = None
    lora: Path | Mapping[str, Any] | None = None
    dp: DPSettings = field(default_factory=DPSettings)
    dp_output: OutputDP = field(default_factory=OutputDP)
    thresholds: Thresholds = field(default_factory=Thresholds)
    claims: Mapping[Protection, tuple[Family, ...]] = field(
        default_factory=lambda: dict(DEFAULT_CLAIMS)
    )
    observer: ObserverSettings = field(default_factory=ObserverSettings)
    """[observer]: the multi-round observer rows (attacks.audit.observer_rows)."""

    def __post_init__(self) -> None:
        # Spellings from code become the typed names once, here, by the section models.
        audit = _load(
            AuditSettings,
            {
                "protections": self.protections,
                "attacks": self.attacks,
                "profile": self.profile,
                "seed": self.seed,
                "top_records": self.top_records,
                "reference_models": self.reference_models,
            },
        )
        object.__setattr__(self, "protections", audit.protections)
        object.__setattr__(self, "attacks", audit.attacks)
        _load(
            FederationSettings,
            {"clients": self.clients, "parties": self.parties, "rounds": self.rounds},
        )
        _load(
            TargetSettings,
            {
                "model": self.model_dir,
                "texts": self.texts,
                "canaries": self.canaries,
                "records": self.records,
                "lora": self.lora,
            },
        )
        if self.model_dir is not None and not self.model_dir.is_dir():
            raise ConfigError(
                f"[target] model {self.model_dir} is not a directory: give a local directory "
                "written by save_pretrained (fedveil never downloads models)"
            )
        if self.texts is not None and not self.texts.is_file():
            raise ConfigError(f"[target] texts {self.texts} is not a file: give a JSONL file")
        unfit = inapplicable(self.records is not None, self.texts is not None)
        named = [a for a in self.attacks if a in unfit]
        if named:
            raise ConfigError(
                f"[audit] attacks: {', '.join(a.value for a in named)} "
                f"{'does' if len(named) == 1 else 'do'} not apply to this [target]: "
                f"{unfit[named[0]]}; leave {'it' if len(named) == 1 else 'them'} out"
            )
        spec = self.update_target
        if spec is not None:
            check_update_target(spec)  # loads model, adapter and records once, here
        object.__setattr__(self, "claims", check_claims(self.claims))

    @property
    def update_target(self) -> UpdateTargetSpec | None:
        """The update cells' user target ([target] model + records), None: built-in."""
        if self.records is None or self.model_dir is None:
            return None
        return UpdateTargetSpec.of(self.model_dir, self.records, self.lora)

    def claimed(self, protection: Protection | str, attack: Family | str) -> bool:
        """Whether `protection` claims to stop `attack` (a claimed cell can breach)."""
        return check_attack(attack) in self.claims.get(parse_protection(protection), ())


def inapplicable(records: bool, texts: bool) -> dict[Family, str]:
    """The columns a user target cannot answer, with why (the built-in: none). Run on
    the built-in targets instead they would report on a model that is not the team's."""
    out: dict[Family, str] = {}
    if records:
        why = (
            "[target] records audits a causal LM's text records, which have no images or "
            "class labels (the column would run the built-in target)"
        )
        out.update({Family.INVERSION: why, Family.LABELS: why})
        if not texts:
            why = (
                "the output attacks on your model need [target] texts (without it they "
                "would probe the built-in model)"
            )
            out.update({f: why for f in Family if f.kind is Kind.OUTPUT})
    return out


# --- the sections of audit.toml ---------------------------------------------------------


def _names(value: object) -> list[object]:
    """A TOML list of names (code may pass a tuple); ValueError otherwise."""
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError("must be a list of strings")
    return list(value)


def _unique(names: tuple[object, ...], key: str) -> None:
    if not names:
        raise ConfigError(f"[audit] {key} must name at least one")
    if len(set(names)) != len(names):
        raise ConfigError(f"[audit] {key} has duplicates: {[str(n) for n in names]}")


class AuditSettings(StrictSettings):
    """[audit]: which cells of the matrix to run, how big, with which seed."""

    settings_where: ClassVar[str] = "audit"

    protections: tuple[Protection, ...] = AuditConfig.protections
    attacks: tuple[Family, ...] = AuditConfig.attacks
    profile: Profile = "quick"
    seed: int = Field(default=AuditConfig.seed, ge=0)
    top_records: int = Field(default=AuditConfig.top_records, ge=1)
    # each one more plain federation per audit; beyond 16 the cost is the audit's
    reference_models: int | None = Field(default=None, ge=0, le=16)

    @field_validator("protections", mode="before")
    @classmethod
    def _protections(cls, value: object) -> tuple[Protection, ...]:
        protections = tuple(parse_protection(p, "[audit] protection") for p in _names(value))
        _unique(protections, "protections")
        return protections

    @field_validator("attacks", mode="before")
    @classmethod
    def _attacks(cls, value: object) -> tuple[Family, ...]:
        attacks = tuple(parse_family(a, "[audit] attack") for a in _names(value))
        _unique(attacks, "attacks")
        return attacks


class FederationSettings(StrictSettings):
    """[federation]: the cohort the update attacks observe, the federation the output
    attacks probe."""

    settings_where: ClassVar[str] = "federation"

    clients: int = Field(default=AuditConfig.clients, ge=2)
    parties: int = Field(default=AuditConfig.parties, ge=2)
    rounds: int | None = Field(default=None, ge=1)  # None: the profile's


class TargetSettings(StrictSettings):
    """[target]: a user's own causal LM (model) with texts for the output attacks, and/or
    records (and the adapter, lora) for the text column's update cells.

    Paths are as written: config_from_toml resolves relative ones against the config
    file's directory, and AuditConfig checks that they exist. lora is a path string
    (a federation plan, or a TOML file with a [lora] table: `fedveil attack
    --lora-config`) or an inline [target.lora] table (rank, alpha, target_modules,
    variant, seed, dropout)."""

    settings_where: ClassVar[str] = "target"

    # TOML spells paths as strings: the one place strictness gives way.
    model: Path | None = Field(default=None, strict=False)
    texts: Path | None = Field(default=None, strict=False)
    canaries: int | None = Field(default=None, ge=2)
    records: Path | None = Field(default=None, strict=False)
    lora: Path | dict[str, Any] | None = None  # the validator makes a string a Path

    @field_validator("lora", mode="before")
    @classmethod
    def _lora(cls, value: object) -> object:
        if isinstance(value, Mapping):
            return dict(value)
        if value is None or isinstance(value, Path):
            return value
        if not isinstance(value, str) or not value:
            raise ValueError(
                "must be a path string (a plan or [lora] TOML) or a [target.lora] table"
            )
        return Path(value).expanduser()

    @field_validator("model", "texts", "records", mode="before")
    @classmethod
    def _path(cls, value: object) -> object:
        if value is None or isinstance(value, Path):
            return value
        if not isinstance(value, str) or not value:
            raise ValueError("must be a path string")
        return Path(value).expanduser()

    @model_validator(mode="after")
    def _both(self) -> TargetSettings:
        if self.model is None and self.records is not None:
            raise ConfigError(
                "[target] records needs model (the local directory of the base model the "
                "records train)"
            )
        if self.model is None and self.lora is not None:
            raise ConfigError("[target] lora needs model and records (the update cells' target)")
        if self.lora is not None and self.records is None:
            raise ConfigError(
                "[target] lora: the adapter is the update cells'; give records (JSONL) too"
            )
        if (self.model is None) != (self.texts is None) and self.records is None:
            raise ConfigError(
                "[target] needs both model (a local directory) and texts (JSONL) for the "
                "output attacks, or model and records (JSONL) for the update attacks"
            )
        return self


class OutputDPSettings(StrictSettings):
    """[dp.output]: the released model's federation (see OutputDP)."""

    settings_where: ClassVar[str] = "dp.output"

    client_clip_norm: float = Field(default=OutputDP().client.clip_norm, gt=0)
    client_noise_multiplier: float = Field(default=OutputDP().client.noise_multiplier, gt=0)
    sgd_clip_norm: float = Field(default=OutputDP().sgd.clip_norm, gt=0)
    sgd_noise_multiplier: float = Field(default=OutputDP().sgd.noise_multiplier, gt=0)

    def settings(self, delta: float) -> OutputDP:
        return OutputDP(
            client=DPSettings(
                float(self.client_clip_norm), float(self.client_noise_multiplier), delta
            ),
            sgd=DPSettings(float(self.sgd_clip_norm), float(self.sgd_noise_multiplier), delta),
        )


class DPSectionSettings(StrictSettings):
    """[dp]: the noise of the DP protections on the update views and the epsilon column
    (fedveil.attacks.protections.DPSettings); [dp.output] the released model's."""

    settings_where: ClassVar[str] = "dp"

    clip_norm: float = Field(default=DPSettings.clip_norm, gt=0)
    noise_multiplier: float = Field(default=DPSettings.noise_multiplier, gt=0)
    delta: float = DPSettings.delta
    output: OutputDPSettings = Field(default_factory=OutputDPSettings)

    @field_validator("delta")
    @classmethod
    def _delta(cls, value: float) -> float:
        if not 0 < value < 1:
            raise ValueError("must be in (0, 1)")
        return value

    def settings(self) -> DPSettings:
        return DPSettings(
            clip_norm=float(self.clip_norm),
            noise_multiplier=float(self.noise_multiplier),
            delta=float(self.delta),
        )


class ThresholdsSettings(StrictSettings):
    """[thresholds]: the fields of Thresholds, with their ranges (rates are in [0, 1])."""

    settings_where: ClassVar[str] = "thresholds"

    max_auc: float = Thresholds.max_auc
    max_tpr_at_1pct_fpr: float = Thresholds.max_tpr_at_1pct_fpr
    max_psnr_over_baseline_db: float = Thresholds.max_psnr_over_baseline_db
    max_ssim_over_baseline: float = Thresholds.max_ssim_over_baseline
    max_label_acc_over_chance: float = Thresholds.max_label_acc_over_chance
    max_token_f1_over_baseline: float = Thresholds.max_token_f1_over_baseline
    max_extraction_rate: float = Thresholds.max_extraction_rate
    empirical_epsilon_within_claimed: bool = Thresholds.empirical_epsilon_within_claimed

    @field_validator("max_auc", "max_tpr_at_1pct_fpr", "max_extraction_rate")
    @classmethod
    def _rate(cls, value: float) -> float:
        if not 0 <= value <= 1:
            raise ValueError("must be in [0, 1]")
        return value

    def thresholds(self) -> Thresholds:
        return Thresholds(**{name: getattr(self, name) for name in type(self).model_fields})


ClaimedAttacks = tuple[Family, ...] | None  # None: the protection's default claims


class ClaimsSettings(StrictSettings):
    """[claims]: per protection, the attack families it claims to stop (rows not given
    keep their defaults). Keys are the protections' spellings (`dp-sgd = [...]`)."""

    settings_where: ClassVar[str] = "claims"

    none: ClaimedAttacks = None
    secagg: ClaimedAttacks = None
    ckks: ClaimedAttacks = None
    secagg_client_dp: ClaimedAttacks = Field(default=None, alias="secagg+client-dp")
    dp_sgd: ClaimedAttacks = Field(default=None, alias="dp-sgd")

    @model_validator(mode="before")
    @classmethod
    def _known_protections(cls, values: object) -> object:
        # Named here, with the protections' own spellings, rather than as pydantic's
        # field names (`dp_sgd`) in an unknown-key message.
        if isinstance(values, Mapping):
            for key in values:
                parse_protection(key, "[claims] protection")
        return values

    @field_validator("none", "secagg", "ckks", "secagg_client_dp", "dp_sgd", mode="before")
    @classmethod
    def _attacks(cls, value: object, info: ValidationInfo) -> tuple[Family, ...] | None:
        if value is None:
            return None
        name = str(info.field_name)
        row = cls.model_fields[name].alias or name
        return tuple(parse_family(a, f"[claims] {row} attack") for a in _names(value))

    def claims(self) -> dict[Protection, tuple[Family, ...]]:
        claims = dict(DEFAULT_CLAIMS)
        for name, info in type(self).model_fields.items():
            attacks = getattr(self, name)
            if attacks is not None:
                claims[Protection(info.alias or name)] = attacks
        return claims


class AuditDocument(StrictSettings):
    """A whole audit.toml: its sections, each optional (absent: every default)."""

    audit: AuditSettings = Field(default_factory=AuditSettings)
    federation: FederationSettings = Field(default_factory=FederationSettings)
    target: TargetSettings = Field(default_factory=TargetSettings)
    dp: DPSectionSettings = Field(default_factory=DPSectionSettings)
    thresholds: ThresholdsSettings = Field(default_factory=ThresholdsSettings)
    claims: ClaimsSettings = Field(default_factory=ClaimsSettings)
    observer: ObserverSettings = Field(default_factory=ObserverSettings)

    @model_validator(mode="before")
    @classmethod
    def _known_sections(cls, values: object) -> object:
        if isinstance(values, Mapping):
            unknown = sorted(set(values) - set(cls.model_fields))
            if unknown:
                known = ", ".join(f"[{name}]" for name in cls.model_fields)
                raise ConfigError(
                    f"unknown section(s) {', '.join(unknown)} in the audit config; "
                    f"known sections: {known}"
                )
        return values


SECTIONS: tuple[str, ...] = tuple(AuditDocument.model_fields)

M = TypeVar("M", bound=BaseModel)

# The loader names a key `section.key`; audit.toml's errors spell it as the file does.
_DOTTED = re.compile(rf"^({'|'.join(SECTIONS)})(?:\.([^:]+))?: ")


def _load(model: type[M], values: Mapping[str, object]) -> M:
    """`values` validated as `model` by the settings loader; its ConfigError names the
    key as `[section] key`."""
    where = str(getattr(model, "settings_where", ""))
    try:
        return load_settings(model, values, where)
    except ConfigError as exc:
        message = _DOTTED.sub(
            lambda m: f"[{m[1]}] {m[2]}: " if m[2] else f"[{m[1]}] ", str(exc), count=1
        )
        raise ConfigError(message) from None


# --- loading ----------------------------------------------------------------------------


def config_from_toml(
    doc: Mapping[str, object], profile: str | None = None, base_dir: Path | None = None
) -> AuditConfig:
    """Build and validate an AuditConfig from a parsed TOML document; `profile` (the
    command line's --profile) overrides [audit] profile (a bad [audit] profile is refused
    all the same); relative [target] paths are relative to `base_dir` (the config file's
    directory)."""
    document = _load(AuditDocument, doc)
    audit, target = document.audit, document.target
    attacks = audit.attacks
    section = doc.get("audit")
    if not (isinstance(section, Mapping) and "attacks" in section):
        # the default columns are those the target can answer (see `inapplicable`)
        unfit = inapplicable(target.records is not None, target.texts is not None)
        attacks = tuple(a for a in attacks if a not in unfit)

    def resolve(path: Path | None) -> Path | None:
        if path is None or path.is_absolute():
            return path
        return (base_dir or Path()) / path

    return AuditConfig(
        protections=audit.protections,
        attacks=attacks,
        profile=audit.profile if profile is None else profile,
        seed=audit.seed,
        top_records=audit.top_records,
        reference_models=audit.reference_models,
        clients=document.federation.clients,
        parties=document.federation.parties,
        rounds=document.federation.rounds,
        model_dir=resolve(target.model),
        texts=resolve(target.texts),
        canaries=target.canaries,
        records=resolve(target.records),
        lora=target.lora if isinstance(target.lora, dict) else resolve(target.lora),
        dp=document.dp.settings(),
        dp_output=document.dp.output.settings(float(document.dp.delta)),
        thresholds=document.thresholds.thresholds(),
        claims=document.claims.claims(),
        observer=document.observer,
    )


def load_config(path: Path | None, profile: str | None = None) -> AuditConfig:
    """Read `path` (None: every default) into an AuditConfig."""
    if path is None:
        return config_from_toml({}, profile)
    return config_from_toml(read_toml(path, "audit config"), profile, path.parent)
