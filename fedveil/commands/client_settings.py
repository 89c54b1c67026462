"""The settings of one `fedveil client` run: the [client] TOML table and its flags.

Why a model of its own: the run must be refused before it touches the network or a file
when anything is wrong, and the refusal must be the same one line whether the value came
from TOML or from a flag. The model is a StrictSettings (fedveil.settings_loader), loaded
the same way as the server's: TOML first, every flag that was given on top.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from fedveil.clients.mode_policy import allowed_modes_from_flags
from fedveil.clients.weights import WeightMode
from fedveil.commands.logs import LOG_FORMATS, LOG_LEVELS
from fedveil.errors import ConfigError
from fedveil.secagg.dp.budget import PrivacyBudget
from fedveil.secagg.protocol.config import ClientPolicy
from fedveil.secagg.protocol.model_chain import ModelChain
from fedveil.settings_loader import (
    StrictSettings,
    apply_overrides,
    check_values,
    load_settings,
    read_toml,
)

UPDATE_SUFFIXES = (".npy", ".npz", ".safetensors")
OUT_SUFFIXES = (".npy", ".npz")
REQUIRED = ("server", "credentials", "roster", "update", "weight")


class ClientSettings(StrictSettings):
    """One `fedveil client` run, validated before anything touches the network."""

    settings_where: ClassVar[str] = "client"

    server: str
    # TOML spells paths as strings: the one place strictness gives way.
    credentials: Path = Field(strict=False)
    roster: Path = Field(strict=False)
    update: Path = Field(strict=False)
    weight: int
    roster_sha256: str | None = None
    rounds: int = Field(default=1, ge=1)
    out: Path | None = Field(default=None, strict=False)
    summary_json: Path | None = Field(default=None, strict=False)
    min_cohort: int = 3
    min_threshold: int = 2
    join_timeout_s: float = Field(default=60.0, gt=0)
    server_name: str | None = None
    model_hash: str | None = None
    previous_result: str | None = None
    log_level: str = "INFO"
    log_format: str = "text"
    privacy_epsilon: float | None = None
    privacy_delta: float = 1e-5
    privacy_ledger: Path | None = Field(default=None, strict=False)
    max_colluders: int = 0
    allow_mode: tuple[str, ...] = ()
    allow_plaintext_for_benchmarks: bool = False
    weight_mode: str = WeightMode.EXACT.value

    @field_validator("allow_mode", mode="before")
    @classmethod
    def _allow_mode(cls, value: object) -> object:
        return tuple(value) if isinstance(value, list) else value  # repeated flags, TOML

    @field_validator("weight")
    @classmethod
    def _weight(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must be a non-negative example count")
        return value

    @field_validator("server")
    @classmethod
    def _server(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"server must be HOST:PORT with a port in 1..65535, got {value!r}")
        return value

    @field_validator("update")
    @classmethod
    def _update(cls, value: Path) -> Path:
        if value.suffix.lower() not in UPDATE_SUFFIXES:
            raise ConfigError(
                f"update {value} must be one of {', '.join(UPDATE_SUFFIXES)} (a flat "
                ".npy vector or named tensors)"
            )
        return value

    @field_validator("out")
    @classmethod
    def _out(cls, value: Path | None) -> Path | None:
        if value is not None and value.suffix.lower() not in OUT_SUFFIXES:
            raise ConfigError(f"out {value} must end in .npy (flat mean) or .npz (named)")
        return value

    @field_validator("model_hash")
    @classmethod
    def _model_hash(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                size = len(bytes.fromhex(value))
            except ValueError:
                size = -1
            if size != 32:
                raise ConfigError(f"model_hash must be 64 hex characters, got {value!r}")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ConfigError(f"log_level must be DEBUG, INFO, WARNING or ERROR, not {value!r}")
        return value

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        if value not in LOG_FORMATS:
            raise ConfigError(f"log_format must be text or json, not {value!r}")
        return value

    @field_validator("weight_mode")
    @classmethod
    def _weight_mode(cls, value: str) -> str:
        WeightMode.parse(value)  # names the choices itself
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ClientSettings:
        self.roster_fingerprint()  # a malformed --roster-sha256 is named before any I/O
        if self.previous_result is not None:
            self.model_chain(bytes(32))  # names a bad value itself
        # ClientPolicy and PrivacyBudget name a bad value themselves.
        self.policy()
        self.privacy_budget()
        if self.privacy_epsilon is not None and self.privacy_ledger is None:
            raise ConfigError(
                "privacy_epsilon needs --privacy-ledger PATH, the file that records the "
                "privacy this client spends (e.g. privacy-ledger.json in its credentials "
                "folder): without it a restart would start the budget from zero"
            )
        if self.privacy_ledger is not None and self.privacy_epsilon is None:
            raise ConfigError(
                "privacy_ledger needs --privacy-epsilon (and --privacy-delta): the budget "
                "the ledger enforces, the same on every run"
            )
        return self

    def roster_fingerprint(self) -> bytes | None:
        """The roster SHA-256 given out of band (`fedveil keys show`), if any."""
        return roster_sha256_bytes(self.roster_sha256, "roster_sha256")

    def policy(self) -> ClientPolicy:
        return ClientPolicy(
            min_cohort=self.min_cohort,
            min_threshold=self.min_threshold,
            max_colluders=self.max_colluders,
            allowed_modes=allowed_modes_from_flags(
                self.allow_mode, self.allow_plaintext_for_benchmarks
            ),
        )

    def model_chain(self, base_model_hash: bytes) -> ModelChain:
        """The chain this run starts from: the base model, plus the last result a previous
        run applied when --previous-result ROUND:DIGEST is given."""
        if self.previous_result is None:
            return ModelChain(base_model_hash)
        round_text, sep, digest_text = self.previous_result.partition(":")
        try:
            digest = bytes.fromhex(digest_text)
        except ValueError:
            digest = b""
        if not sep or not round_text.isdigit() or len(digest) != 32:
            raise ConfigError(
                "previous_result must be ROUND:DIGEST (the round id and the 64-hex "
                f"result_digest of the last round applied), got {self.previous_result!r}"
            )
        return ModelChain(base_model_hash, result_digest=digest, round_id=int(round_text))

    def privacy_budget(self) -> PrivacyBudget | None:
        """The client-level DP budget over this run, if one was given."""
        if self.privacy_epsilon is None:
            return None
        return PrivacyBudget(self.privacy_epsilon, self.privacy_delta)

    def out_path(self, round_id: int) -> Path | None:
        """`--out` with `{round}` replaced, so several rounds can keep every result."""
        if self.out is None:
            return None
        return Path(str(self.out).replace("{round}", str(round_id)))


def _client_table(path: Path) -> dict[str, object]:
    """The [client] table of `path`, its keys spelled with underscores (`min-cohort`, the
    flag's spelling, is accepted too)."""
    data = read_toml(path, "config file")
    unknown_tables = sorted(set(data) - {"client"})
    if unknown_tables:
        raise ConfigError(f"{path}: unknown tables {unknown_tables}; use [client]")
    table = data.get("client", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [client] must be a table")
    values = {str(key).replace("-", "_"): value for key, value in table.items()}
    check_values(ClientSettings, values, "client")
    return values


def load_client_settings(path: Path | None, overrides: Mapping[str, Any]) -> ClientSettings:
    """The [client] table of `path` (if any), then every non-None flag on top."""
    values = apply_overrides({} if path is None else _client_table(path), overrides)
    missing = [name for name in REQUIRED if name not in values]
    if missing:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in missing)
        raise ConfigError(f"missing {flags} (give them as flags or in the [client] table)")
    return load_settings(ClientSettings, values, "client")


def roster_sha256_bytes(value: str | None, key: str) -> bytes | None:
    """A roster SHA-256 spelt as 64 hex digits (from `fedveil keys show`), or None."""
    if value is None:
        return None
    text = value.strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ConfigError(f"{key} must be 64 hex digits (from `fedveil keys show`), got {value!r}")
    return bytes.fromhex(text)
