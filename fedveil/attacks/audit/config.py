"""`audit.toml` -> AuditConfig: what to run, the DP noise, thresholds and claims.

Why strict: an audit that silently ignores a misspelt threshold gates nothing. Every
unknown section or key, wrong type or out-of-range value is a ConfigError naming it
(the command exits 2 on those).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fedveil.attacks.audit.matrix import ATTACKS, DEFAULT_CLAIMS, check_attack, check_claims
from fedveil.attacks.protections import PROTECTIONS, DPSettings, check_protection
from fedveil.errors import ConfigError

PROFILES = ("quick", "full")


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
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "empirical_epsilon_within_claimed":
                if not isinstance(value, bool):
                    raise ConfigError(f"[thresholds] {f.name} must be true or false, got {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"[thresholds] {f.name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f"[thresholds] {f.name} must be finite, got {value!r}")
        for name in ("max_auc", "max_tpr_at_1pct_fpr", "max_extraction_rate"):
            if not 0 <= getattr(self, name) <= 1:
                value = getattr(self, name)
                raise ConfigError(f"[thresholds] {name} must be in [0, 1], got {value}")


@dataclass(frozen=True)
class AuditConfig:
    """One audit: which cells to run, the settings they run with, and how to judge them.

    model_dir / texts: a user's local causal-LM directory (save_pretrained) and JSONL
      texts ({"text": ...} per line) for the output attacks; None: the built-in tiny
      GPT-2 and its synthetic texts. The update attacks always use the built-in targets
      (they measure what the protection's round reveals). canaries: how many to plant.
    clients: the cohort of the secure aggregate the update attacks observe.
    parties: the federation whose released model the output attacks probe (party 0
      holds the planted canaries). rounds: its FedAvg rounds (None: the profile's).
    dp: clip norm C and noise multiplier z of the DP protections (per round for client
      DP, per step for DP-SGD), and delta of their epsilon.
    """

    protections: tuple[str, ...] = PROTECTIONS
    attacks: tuple[str, ...] = ATTACKS
    profile: str = "quick"
    seed: int = 0
    clients: int = 10
    parties: int = 3
    rounds: int | None = None
    model_dir: Path | None = None
    texts: Path | None = None
    canaries: int | None = None
    dp: DPSettings = field(default_factory=DPSettings)
    thresholds: Thresholds = field(default_factory=Thresholds)
    claims: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_CLAIMS))

    def __post_init__(self) -> None:
        if not self.protections or not self.attacks:
            raise ConfigError("[audit] protections and attacks must each name at least one")
        for p in self.protections:
            check_protection(p)
        for a in self.attacks:
            check_attack(a)
        if len(set(self.protections)) != len(self.protections):
            raise ConfigError(f"[audit] protections has duplicates: {list(self.protections)}")
        if len(set(self.attacks)) != len(self.attacks):
            raise ConfigError(f"[audit] attacks has duplicates: {list(self.attacks)}")
        if self.profile not in PROFILES:
            raise ConfigError(f"profile must be one of {', '.join(PROFILES)}, got {self.profile!r}")
        _int(self.seed, "[audit] seed", 0)
        _int(self.clients, "[federation] clients", 2)
        _int(self.parties, "[federation] parties", 2)
        if self.rounds is not None:
            _int(self.rounds, "[federation] rounds", 1)
        if self.canaries is not None:
            _int(self.canaries, "[target] canaries", 2)
        if (self.model_dir is None) != (self.texts is None):
            raise ConfigError("[target] needs both model (a local directory) and texts (JSONL)")
        if self.model_dir is not None and not self.model_dir.is_dir():
            raise ConfigError(
                f"[target] model {self.model_dir} is not a directory: give a local directory "
                "written by save_pretrained (fedveil never downloads models)"
            )
        if self.texts is not None and not self.texts.is_file():
            raise ConfigError(f"[target] texts {self.texts} is not a file: give a JSONL file")
        object.__setattr__(self, "claims", check_claims(self.claims))

    def claimed(self, protection: str, attack: str) -> bool:
        """Whether `protection` claims to stop `attack` (a claimed cell can breach)."""
        return attack in self.claims.get(protection, ())

    def to_dict(self) -> dict[str, Any]:
        return {
            "protections": list(self.protections),
            "attacks": list(self.attacks),
            "profile": self.profile,
            "seed": self.seed,
            "clients": self.clients,
            "parties": self.parties,
            "rounds": self.rounds,
            "model_dir": None if self.model_dir is None else str(self.model_dir),
            "texts": None if self.texts is None else str(self.texts),
            "canaries": self.canaries,
            "dp": {
                "clip_norm": self.dp.clip_norm,
                "noise_multiplier": self.dp.noise_multiplier,
                "sigma": self.dp.clip_norm * self.dp.noise_multiplier,
                "delta": self.dp.delta,
            },
            "thresholds": {f.name: getattr(self.thresholds, f.name) for f in fields(Thresholds)},
            "claims": {p: list(a) for p, a in self.claims.items()},
        }


def _int(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _table(doc: Mapping[str, Any], name: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    table = doc.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}] must be a table, got {type(table).__name__}")
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ConfigError(
            f"[{name}] has unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}"
        )
    return dict(table)


def _names(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of strings, got {value!r}")
    return tuple(value)


def config_from_toml(
    doc: Mapping[str, Any], profile: str | None = None, base_dir: Path | None = None
) -> AuditConfig:
    """Build and validate an AuditConfig from a parsed TOML document; `profile` (the
    command line's --profile) overrides [audit] profile; relative [target] paths are
    relative to `base_dir` (the config file's directory)."""
    sections = ("audit", "federation", "target", "dp", "thresholds", "claims")
    unknown = sorted(set(doc) - set(sections))
    if unknown:
        raise ConfigError(
            f"unknown section(s) {', '.join(unknown)}; allowed: {', '.join(sections)}"
        )
    audit = _table(doc, "audit", ("protections", "attacks", "profile", "seed"))
    federation = _table(doc, "federation", ("clients", "parties", "rounds"))
    target = _table(doc, "target", ("model", "texts", "canaries"))
    dp = _table(doc, "dp", ("clip_norm", "noise_multiplier", "delta"))
    thresholds = _table(doc, "thresholds", tuple(f.name for f in fields(Thresholds)))
    claims_doc = _table(doc, "claims", PROTECTIONS)
    kwargs: dict[str, Any] = {}
    if "protections" in audit:
        kwargs["protections"] = _names(audit["protections"], "[audit] protections")
    if "attacks" in audit:
        kwargs["attacks"] = _names(audit["attacks"], "[audit] attacks")
    for key in ("profile", "seed"):
        if key in audit:
            kwargs[key] = audit[key]
    if profile is not None:
        kwargs["profile"] = profile
    kwargs.update(federation)
    for key, field_name in (("model", "model_dir"), ("texts", "texts")):
        if key in target:
            if not isinstance(target[key], str) or not target[key]:
                raise ConfigError(f"[target] {key} must be a path string, got {target[key]!r}")
            path = Path(target[key]).expanduser()
            kwargs[field_name] = path if path.is_absolute() else (base_dir or Path()) / path
    if "canaries" in target:
        kwargs["canaries"] = target["canaries"]
    for key, value in dp.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"[dp] {key} must be a number, got {value!r}")
    try:
        kwargs["dp"] = DPSettings(**{k: float(v) for k, v in dp.items()})
    except ConfigError as exc:
        raise ConfigError(f"[dp] {str(exc).removeprefix('DPSettings.')}") from None
    kwargs["thresholds"] = Thresholds(**thresholds)
    claims = dict(DEFAULT_CLAIMS)
    for protection, attacks in claims_doc.items():
        claims[protection] = _names(attacks, f"[claims] {protection}")
    kwargs["claims"] = claims
    return AuditConfig(**kwargs)


def load_config(path: Path | None, profile: str | None = None) -> AuditConfig:
    """Read `path` (None: every default) into an AuditConfig."""
    if path is None:
        return config_from_toml({}, profile)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the audit config {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid TOML: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return config_from_toml(doc, profile, path.parent)
