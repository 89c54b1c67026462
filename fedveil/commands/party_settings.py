"""The settings of one `fedveil train` party: party.toml and the flags that override it.

Why a strict model: an organisation's run must be refused before it loads a model or
touches the network when anything in its file is wrong, and the refusal must be one line
that names the key (`lora.rnak: unknown key; known keys: ...`). The model is a
StrictSettings (fedveil.settings_loader), like the client's and the server's.

Why no torch here: `fedveil` imports every command at start-up, and `fedveil server` or
`keys` must start without the training stack. LoraSettings and TrainConfig (which import
torch) are built from these tables in `commands.train_party`, and check the rest.

Layout (relative paths are taken from the working directory, as `fedveil client` does)::

    [party]   credentials, roster, roster_sha256, server, server_name, model_dir, rounds
              (default: the federation plan's), out, allow_mode, min_cohort, min_threshold,
              join_timeout_s, max_failed_rounds, log_level, log_format
    [data]    exactly one of texts (JSONL of {"text": ...}, causal LM), captions (JSONL of
              {"image": ..., "caption": ...}, a captioner on the organisation's own
              images: learner.data.image_captions) or city_domain (built-in captioner
              data: energy, residential, urban); city_samples, city_seed (city_domain);
              max_length (texts; a captioner's captions are cut at its decoder's length)
    [lora]    optional: rank, alpha, dropout, target_modules, variant (ffa | fedavg), seed;
              without it the party adopts the adapter of the plan the server serves
              (`fedveil plan`); with it, a plan that differs is refused, naming the keys
    [recipe]  epochs, max_steps, batch_size, learning_rate, weight_decay, max_grad_norm,
              schedule, seed, threads
    [eval]    optional held-out evaluation after each round: texts (a JSONL like
              data.texts, for a causal LM: mean token loss and perplexity); captions (a
              JSONL like data.captions, for captions data: the captioner's mean token loss
              and perplexity, since concept recall needs the built-in scenes' concept
              annotations); or, for city_domain data, city_test_samples (held-out scenes
              of the built-in data, default 90: mean concept recall and BLEU, as
              `fedveil demo` scores them)
    [dp]      optional differential privacy, with a budget kept in a ledger file that
              survives restarts: kind ("sample": DP-SGD on this party's records; "client":
              this party's budget for the service's client-level DP rounds), epsilon,
              delta (1e-5), accountant (prv | rdp | pld), ledger (default
              privacy-ledger.json in the credentials folder); for "sample" only: clip_norm (1.0),
              noise_multiplier (default: calibrated to epsilon over the party's rounds),
              batch_size, learning_rate (default: [recipe]'s)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from fedveil.clients.mode_policy import allowed_modes_from_flags
from fedveil.commands.client_settings import roster_sha256_bytes
from fedveil.commands.logs import LOG_FORMATS, LOG_LEVELS
from fedveil.errors import ConfigError
from fedveil.secagg.protocol.config import ClientPolicy
from fedveil.settings_loader import StrictSettings, apply_overrides, load_settings, read_toml

CITY_DOMAINS = ("energy", "residential", "urban")
TABLES = ("party", "data", "lora", "recipe", "eval", "dp")
DEFAULT_CITY_TEST_SAMPLES = 90


class PartyTable(StrictSettings):
    """[party]: who this party is, where the service is, what it trains and for how long."""

    credentials: Path = Field(strict=False)
    roster: Path = Field(strict=False)
    server: str
    model_dir: Path = Field(strict=False)
    out: Path = Field(strict=False)
    rounds: int | None = Field(default=None, ge=1)  # None: the served plan's rounds
    roster_sha256: str | None = None
    server_name: str | None = None
    allow_mode: tuple[str, ...] = ()
    min_cohort: int = Field(default=3, ge=2)
    min_threshold: int = Field(default=2, ge=1)
    join_timeout_s: float = Field(default=60.0, gt=0)
    max_failed_rounds: int = Field(default=3, ge=0)  # rounds that may fail before giving up
    log_level: str = "INFO"
    log_format: str = "text"

    @field_validator("allow_mode", mode="before")
    @classmethod
    def _allow_mode(cls, value: object) -> object:
        return tuple(value) if isinstance(value, list) else value

    @field_validator("server")
    @classmethod
    def _server(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"party.server must be HOST:PORT with a port in 1..65535, got {value!r}"
            )
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ConfigError(f"party.log_level must be one of {LOG_LEVELS}, got {value!r}")
        return value.upper()

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        if value not in LOG_FORMATS:
            raise ConfigError(f"party.log_format must be one of {LOG_FORMATS}, got {value!r}")
        return value

    def roster_fingerprint(self) -> bytes | None:
        """The roster SHA-256 given out of band (`fedveil keys show`), if any."""
        return roster_sha256_bytes(self.roster_sha256, "party.roster_sha256")

    def policy(self) -> ClientPolicy:
        """The rounds this party takes part in: SecAgg, plus the modes it allows."""
        return ClientPolicy(
            min_cohort=self.min_cohort,
            min_threshold=self.min_threshold,
            allowed_modes=allowed_modes_from_flags(self.allow_mode, False),
        )


class DataTable(StrictSettings):
    """[data]: a JSONL text corpus (causal LM), a JSONL of the organisation's own image
    captions (captioner), or the built-in city data of one domain (captioner)."""

    texts: Path | None = Field(default=None, strict=False)
    captions: Path | None = Field(default=None, strict=False)
    city_domain: str | None = None
    city_samples: int = Field(default=240, ge=1)
    city_seed: int = Field(default=0, ge=0)
    max_length: int = Field(default=128, ge=2)

    @model_validator(mode="after")
    def _one_source(self) -> DataTable:
        given = [v for v in (self.texts, self.captions, self.city_domain) if v is not None]
        if len(given) != 1:
            raise ConfigError(
                'data: give exactly one of texts (a JSONL file of {"text": ...} lines, for a '
                'causal LM), captions (a JSONL file of {"image": ..., "caption": ...} lines, '
                "for a captioner) or city_domain (the built-in captioner's data: "
                f"{', '.join(CITY_DOMAINS)})"
            )
        if self.city_domain is not None and self.city_domain not in CITY_DOMAINS:
            raise ConfigError(
                f"data.city_domain must be one of {', '.join(CITY_DOMAINS)}, "
                f"got {self.city_domain!r}"
            )
        return self


class LoraTable(StrictSettings):
    """[lora]: the adapter; every party of a federation must give the same values."""

    rank: int = Field(default=8, ge=1, le=1024)
    alpha: float = Field(default=16.0, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: tuple[str, ...] | None = None
    variant: Literal["ffa", "fedavg"] = "ffa"
    seed: int = Field(default=0, ge=0)

    @field_validator("target_modules", mode="before")
    @classmethod
    def _targets(cls, value: object) -> object:
        return tuple(value) if isinstance(value, list) else value


class RecipeTable(StrictSettings):
    """[recipe]: how this party trains locally each round (its own choice)."""

    epochs: int = Field(default=1, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=32, ge=1)
    learning_rate: float = Field(default=5e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    schedule: Literal["constant", "cosine"] = "constant"
    seed: int = Field(default=0, ge=0)
    threads: int = Field(default=1, ge=1)


class EvalTable(StrictSettings):
    """[eval]: this party's own held-out data, scored with the global adapter each round."""

    texts: Path | None = Field(default=None, strict=False)
    captions: Path | None = Field(default=None, strict=False)
    city_test_samples: int | None = Field(default=None, ge=1)


DEFAULT_LEDGER_FILE = "privacy-ledger.json"
SAMPLE_ONLY = ("clip_norm", "noise_multiplier", "batch_size", "learning_rate")
"""[dp] keys that tune DP-SGD; the service sets the noise of client-level DP rounds."""


class DpTable(StrictSettings):
    """[dp]: this party's privacy budget, and (kind "sample") how DP-SGD spends it.

    Why a budget and a ledger file for both kinds: the budget is what the organisation
    accepts to spend over the federation, and only a file that survives a restart makes a
    re-run start from what was already spent instead of from zero."""

    kind: Literal["sample", "client"]
    epsilon: float = Field(gt=0)
    delta: float = Field(default=1e-5, gt=0, lt=1)
    clip_norm: float | None = Field(default=None, gt=0)  # None: 1.0 (sample)
    noise_multiplier: float | None = Field(default=None, gt=0)  # None: calibrated
    accountant: Literal["prv", "rdp", "pld"] = "prv"
    batch_size: int | None = Field(default=None, ge=1)  # None: recipe.batch_size
    learning_rate: float | None = Field(default=None, gt=0)  # None: recipe.learning_rate
    # None: privacy-ledger.json in the credentials folder, which outlives any run's OUT
    # folder (deleting OUT must not reset the budget)
    ledger: Path | None = Field(default=None, strict=False)

    @model_validator(mode="after")
    def _kind_fits(self) -> DpTable:
        if self.kind == "client":
            given = [name for name in SAMPLE_ONLY if getattr(self, name) is not None]
            if given:
                raise ConfigError(
                    f'dp.{given[0]} is for kind = "sample" (DP-SGD on this party\'s '
                    'records); with kind = "client" the service sets the noise of its '
                    "client-level DP rounds and this party keeps only the budget"
                )
        return self

    def ledger_path(self, credentials: Path) -> Path:
        """The ledger file: dp.ledger, else privacy-ledger.json in the party's credentials
        folder (clients.privacy_ledger's suggested place)."""
        return self.ledger if self.ledger is not None else credentials / DEFAULT_LEDGER_FILE


class PartySettings(StrictSettings):
    """One `fedveil train` run, validated before anything is loaded or sent."""

    party: PartyTable
    data: DataTable
    lora: LoraTable | None = None
    """None: adopt the adapter of the plan the server serves (or LoraTable's defaults
    when it serves none). Given: it must match the served plan, or the party refuses."""
    recipe: RecipeTable = Field(default_factory=RecipeTable)
    eval: EvalTable | None = None
    dp: DpTable | None = None
    """None: no differential privacy (the service's rounds may still add some; without a
    budget this party does not account for it)."""

    @model_validator(mode="after")
    def _consistent(self) -> PartySettings:
        self.party.roster_fingerprint()  # a malformed roster_sha256 is named before any I/O
        self.party.policy()  # an unknown allow_mode is named too
        self._eval_fits_data()
        self._dp_fits()
        return self

    def _dp_fits(self) -> None:
        """Refuse [dp] with settings it would silently ignore or that cannot run."""
        dp = self.dp
        if dp is None:
            return
        noiseless = [mode for mode in self.party.allow_mode if mode != "secagg"]
        if dp.kind == "client" and noiseless:
            raise ConfigError(
                f'party.allow_mode {noiseless} with dp.kind = "client": those modes add '
                "no DP noise, so a party with a privacy budget refuses their rounds; leave "
                "them out (client-level DP runs in SecAgg rounds)"
            )
        recipe = self.recipe
        if dp.kind == "sample" and (recipe.epochs != 1 or recipe.max_steps is not None):
            raise ConfigError(
                'recipe.epochs and recipe.max_steps do not apply with dp.kind = "sample": '
                "each round is one Poisson-sampled pass over the records, as the noise is "
                "calibrated; leave epochs at 1 and max_steps out"
            )
        if dp.kind == "sample" and recipe.schedule != "constant":
            raise ConfigError(
                'recipe.schedule must be "constant" with dp.kind = "sample" (DP-SGD steps '
                "with a constant learning rate, dp.learning_rate or recipe.learning_rate)"
            )

    def _eval_fits_data(self) -> None:
        """[eval] scores the kind of data [data] holds, and only that kind."""
        held_out = self.eval
        if held_out is None:
            return
        if self.data.texts is not None:
            _eval_for_texts(held_out)
        elif self.data.captions is not None:
            _eval_for_captions(held_out)
        else:
            _eval_for_city(held_out)


_HELD_OUT_CAPTIONS = 'a held-out JSONL of {"image": ..., "caption": ...} lines'


def _eval_for_texts(held_out: EvalTable) -> None:
    if held_out.city_test_samples is not None:
        raise ConfigError(
            "eval.city_test_samples is for city_domain data; with data.texts give "
            'eval.texts (a held-out JSONL of {"text": ...} lines)'
        )
    if held_out.captions is not None:
        raise ConfigError(
            "eval.captions is for data.captions (a captioner); with data.texts give "
            'eval.texts (a held-out JSONL of {"text": ...} lines)'
        )
    if held_out.texts is None:
        raise ConfigError(
            'eval: give texts (a held-out JSONL of {"text": ...} lines) to evaluate '
            "a causal LM, or leave out [eval]"
        )


def _eval_for_captions(held_out: EvalTable) -> None:
    if held_out.texts is not None or held_out.city_test_samples is not None:
        key = "texts" if held_out.texts is not None else "city_test_samples"
        raise ConfigError(
            f"eval.{key} does not score data.captions; give eval.captions ({_HELD_OUT_CAPTIONS})"
        )
    if held_out.captions is None:
        raise ConfigError(
            f"eval: give captions ({_HELD_OUT_CAPTIONS}) to evaluate a captioner on your "
            "own images, or leave out [eval]"
        )


def _eval_for_city(held_out: EvalTable) -> None:
    if held_out.texts is not None:
        raise ConfigError(
            "eval.texts is for a causal LM (data.texts); with data.city_domain give "
            f"eval.city_test_samples (default {DEFAULT_CITY_TEST_SAMPLES}) or an empty [eval]"
        )
    if held_out.captions is not None:
        raise ConfigError(
            "eval.captions is for data.captions (your own images); with data.city_domain "
            f"give eval.city_test_samples (default {DEFAULT_CITY_TEST_SAMPLES}) or an empty [eval]"
        )


PARTY_FLAGS = ("server", "credentials", "rounds", "out", "log_level", "log_format")
"""[party] keys a flag may override (`--server` etc.)."""


def load_party_settings(path: Path, overrides: Mapping[str, Any]) -> PartySettings:
    """party.toml, with every flag that was given on top of its [party] table."""
    data = read_toml(path, "party file")
    unknown = sorted(set(data) - set(TABLES))
    if unknown:
        raise ConfigError(
            f"{path}: unknown tables {unknown}; party.toml has "
            "[party], [data], [lora], [recipe], [eval], [dp]"
        )
    for name in TABLES:
        if name in data and not isinstance(data[name], dict):
            raise ConfigError(f"{path}: [{name}] must be a table")
    party = data.get("party", {})
    assert isinstance(party, dict)
    values = dict(data)
    values["party"] = apply_overrides(party, {k: overrides.get(k) for k in PARTY_FLAGS})
    values.setdefault("data", {})
    return load_settings(PartySettings, values, "")
