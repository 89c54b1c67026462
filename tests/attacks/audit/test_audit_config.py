"""The audit config: defaults, strict parsing, and errors that name what to fix."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from fedveil.attacks.audit.config import (
    AuditConfig,
    DPSectionSettings,
    Thresholds,
    ThresholdsSettings,
    config_from_toml,
    load_config,
)
from fedveil.attacks.audit.matrix import ATTACKS, DEFAULT_CLAIMS, UPDATE_ATTACKS
from fedveil.attacks.protections import PROTECTIONS, DPSettings, Protection
from fedveil.errors import ConfigError
from tests.helpers import REPO_ROOT

REPO = REPO_ROOT


def test_defaults_cover_the_whole_matrix() -> None:
    config = load_config(None)
    assert config.protections == PROTECTIONS and config.attacks == ATTACKS
    assert config.profile == "quick"
    # secure aggregation claims the update attacks, not what the released model memorised,
    # and not the cohort's token bag (the LM-head LoRA keeps one row per token in the sum)
    assert all(config.claimed("secagg", a) for a in UPDATE_ATTACKS if a != "text")
    assert not config.claimed("secagg", "text") and not config.claimed("ckks", "text")
    assert not config.claimed("secagg", "generation")
    assert not config.claimed("none", "inversion")
    assert all(config.claimed("dp-sgd", a) for a in ATTACKS)


def test_the_shipped_config_parses_and_the_profile_flag_wins() -> None:
    config = load_config(REPO / "benchmarks" / "audit.toml", profile="full")
    assert config.profile == "full"
    assert set(config.protections) == set(PROTECTIONS)


def test_a_toml_document_sets_every_section() -> None:
    config = config_from_toml(
        {
            "audit": {"protections": ["none", "secagg"], "attacks": ["labels"], "seed": 3},
            "federation": {"clients": 5, "parties": 2, "rounds": 4},
            "dp": {"clip_norm": 0.5, "noise_multiplier": 2, "delta": 1e-6},
            "thresholds": {"max_auc": 0.6, "empirical_epsilon_within_claimed": False},
            "claims": {"none": ["labels"]},
        }
    )
    assert config.protections == ("none", "secagg") and config.seed == 3
    assert (config.clients, config.parties, config.rounds) == (5, 2, 4)
    assert config.dp.noise_multiplier == 2.0 and config.dp.delta == 1e-6
    assert config.thresholds.max_auc == 0.6
    assert config.claimed("none", "labels")
    assert (
        config.claims[Protection.SECAGG] == DEFAULT_CLAIMS[Protection.SECAGG]
    )  # untouched rows keep defaults


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"audti": {}}, "unknown section(s) audti"),
        ({"audit": 3}, "[audit] must be a table, got 3"),
        ({"audit": {"protection": ["none"]}}, "[audit] protection: unknown key"),
        ({"audit": {"protections": ["none", "tls"]}}, "unknown [audit] protection 'tls'"),
        ({"audit": {"protections": "none"}}, "[audit] protections: must be a list of strings"),
        ({"audit": {"attacks": ["dlg"]}}, "unknown [audit] attack 'dlg'"),
        ({"audit": {"attacks": []}}, "[audit] attacks must name at least one"),
        ({"audit": {"protections": ["none", "none"]}}, "[audit] protections has duplicates"),
        ({"audit": {"profile": "fast"}}, "[audit] profile: must be 'quick' or 'full', got 'fast'"),
        ({"audit": {"seed": 1.5}}, "[audit] seed: must be an integer, got 1.5"),
        ({"federation": {"clients": 1}}, "[federation] clients: must be >= 2, got 1"),
        ({"federation": {"rounds": 0}}, "[federation] rounds: must be >= 1, got 0"),
        ({"federation": {"clients": True}}, "[federation] clients: must be an integer"),
        ({"target": {"model": ""}}, "[target] model: must be a path string"),
        ({"target": {"canaries": 1}}, "[target] canaries: must be >= 2"),
        ({"target": {"model": "m"}}, "[target] needs both model"),
        ({"dp": {"noise_multiplier": 0}}, "[dp] noise_multiplier: must be > 0"),
        ({"dp": {"clip_norm": "big"}}, "[dp] clip_norm: must be a number"),
        ({"dp": {"delta": 2}}, "[dp] delta: must be in (0, 1), got 2"),
        ({"dp": {"sigma": 1.0}}, "[dp] sigma: unknown key; known keys: clip_norm, delta"),
        ({"thresholds": {"max_auc": 1.5}}, "[thresholds] max_auc: must be in [0, 1], got 1.5"),
        (
            {"thresholds": {"max_psnr_over_baseline_db": "3"}},
            "max_psnr_over_baseline_db: must be a number",
        ),
        ({"thresholds": {"max_psnr_over_baseline_db": float("inf")}}, "must be a finite number"),
        (
            {"thresholds": {"empirical_epsilon_within_claimed": 1}},
            "[thresholds] empirical_epsilon_within_claimed: must be true or false",
        ),
        ({"claims": {"secagg": ["inversion", "x"]}}, "unknown [claims] secagg attack 'x'"),
        ({"claims": {"dp-sgd": ["x"]}}, "unknown [claims] dp-sgd attack 'x'"),
        ({"claims": {"tls": []}}, "unknown [claims] protection 'tls'"),
        ({"claims": {"none": "labels"}}, "[claims] none: must be a list of strings"),
    ],
)
def test_bad_configs_name_what_to_fix(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_toml(doc)
    assert message in str(err.value)
    assert "\n" not in str(err.value)  # one line, never a pydantic dump


def test_a_bad_profile_in_the_file_is_refused_even_under_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"\[audit\] profile"):
        config_from_toml({"audit": {"profile": "fast"}}, profile="full")
    assert config_from_toml({"audit": {"profile": "full"}}, profile="quick").profile == "quick"


def test_claims_rows_use_the_protections_spellings() -> None:
    config = config_from_toml({"claims": {"dp-sgd": ["labels"], "secagg+client-dp": []}})
    assert config.claims[Protection.DP_SGD] == ("labels",)
    assert config.claims[Protection.SECAGG_CLIENT_DP] == ()
    assert not config.claimed("secagg+client-dp", "labels")
    assert config.claims[Protection.NONE] == DEFAULT_CLAIMS[Protection.NONE]


def test_target_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "texts.jsonl").write_text('{"text": "hi"}\n')
    path = tmp_path / "audit.toml"
    path.write_text('[target]\nmodel = "model"\ntexts = "texts.jsonl"\ncanaries = 4\n')
    config = load_config(path)
    assert config.model_dir == tmp_path / "model" and config.texts == tmp_path / "texts.jsonl"
    assert config.canaries == 4
    path.write_text('[target]\nmodel = "nope"\ntexts = "texts.jsonl"\n')
    with pytest.raises(ConfigError, match="is not a directory"):
        load_config(path)
    path.write_text('[target]\nmodel = "model"\ntexts = "nope.jsonl"\n')
    with pytest.raises(ConfigError, match="is not a file"):
        load_config(path)


def test_section_models_match_the_dataclasses() -> None:
    # Thresholds stays a dataclass (the report lists its fields); its [thresholds] model
    # must know exactly the same keys, with the same defaults.
    assert list(ThresholdsSettings.model_fields) == [f.name for f in fields(Thresholds)]
    assert ThresholdsSettings().thresholds() == Thresholds()
    assert DPSectionSettings().settings() == DPSettings()


def test_unreadable_and_invalid_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing.toml does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[audit\nprofile = 'quick'\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_thresholds_and_config_validate_directly() -> None:
    with pytest.raises(ConfigError, match="max_extraction_rate"):
        Thresholds(max_extraction_rate=-0.1)
    with pytest.raises(ConfigError, match=r"\[thresholds\] max_auc"):
        Thresholds(max_auc="0.7")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"\[audit\] seed: must be >= 0, got -1"):
        AuditConfig(seed=-1)
    with pytest.raises(ConfigError, match=r"\[federation\] parties"):
        AuditConfig(parties=1)
    with pytest.raises(ConfigError, match="unknown \\[audit\\] protection 'tls'"):
        AuditConfig(protections=("tls",))  # type: ignore[arg-type]
    assert AuditConfig(protections=("none",)).protections == (Protection.NONE,)  # type: ignore[arg-type]


def test_dp_output_is_one_source_for_the_released_models_noise() -> None:
    config = config_from_toml({"dp": {"delta": 1e-6, "output": {"client_noise_multiplier": 0.5}}})
    assert config.dp_output.client.noise_multiplier == 0.5
    assert config.dp_output.client.clip_norm == 0.02
    assert config.dp_output.sgd.noise_multiplier == 2.0
    assert config.dp_output.client.delta == config.dp_output.sgd.delta == 1e-6
    with pytest.raises(ConfigError, match=r"\[dp\] output.client_noise: unknown key"):
        config_from_toml({"dp": {"output": {"client_noise": 0.5}}})
    with pytest.raises(ConfigError, match=r"output.sgd_clip_norm: must be > 0"):
        config_from_toml({"dp": {"output": {"sgd_clip_norm": 0}}})
