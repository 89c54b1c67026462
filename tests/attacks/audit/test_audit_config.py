"""The audit config: defaults, strict parsing, and errors that name what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedveil.attacks.audit.config import AuditConfig, Thresholds, config_from_toml, load_config
from fedveil.attacks.audit.matrix import ATTACKS, DEFAULT_CLAIMS, UPDATE_ATTACKS
from fedveil.attacks.protections import PROTECTIONS
from fedveil.errors import ConfigError
from tests.helpers import REPO_ROOT

REPO = REPO_ROOT


def test_defaults_cover_the_whole_matrix() -> None:
    config = load_config(None)
    assert config.protections == PROTECTIONS and config.attacks == ATTACKS
    assert config.profile == "quick"
    # secure aggregation claims the update attacks, not what the released model memorised
    assert all(config.claimed("secagg", a) for a in UPDATE_ATTACKS)
    assert not config.claimed("secagg", "generation_mia")
    assert not config.claimed("none", "gradient_inversion")
    assert all(config.claimed("dp-sgd", a) for a in ATTACKS)


def test_the_shipped_config_parses_and_the_profile_flag_wins() -> None:
    config = load_config(REPO / "benchmarks" / "audit.toml", profile="full")
    assert config.profile == "full"
    assert set(config.protections) == set(PROTECTIONS)


def test_a_toml_document_sets_every_section() -> None:
    config = config_from_toml(
        {
            "audit": {"protections": ["none", "secagg"], "attacks": ["label_leak"], "seed": 3},
            "federation": {"clients": 5, "parties": 2, "rounds": 4},
            "dp": {"clip_norm": 0.5, "noise_multiplier": 2, "delta": 1e-6},
            "thresholds": {"max_auc": 0.6, "empirical_epsilon_within_claimed": False},
            "claims": {"none": ["label_leak"]},
        }
    )
    assert config.protections == ("none", "secagg") and config.seed == 3
    assert (config.clients, config.parties, config.rounds) == (5, 2, 4)
    assert config.dp.noise_multiplier == 2.0 and config.dp.delta == 1e-6
    assert config.thresholds.max_auc == 0.6
    assert config.claimed("none", "label_leak")
    assert config.claims["secagg"] == DEFAULT_CLAIMS["secagg"]  # untouched rows keep defaults


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"audti": {}}, "unknown section(s) audti"),
        ({"audit": {"protection": ["none"]}}, "unknown key(s) protection"),
        ({"audit": {"protections": ["none", "tls"]}}, "unknown protection 'tls'"),
        ({"audit": {"attacks": ["dlg"]}}, "unknown attack 'dlg'"),
        ({"audit": {"attacks": []}}, "at least one"),
        ({"audit": {"protections": ["none", "none"]}}, "duplicates"),
        ({"audit": {"profile": "fast"}}, "profile must be one of quick, full"),
        ({"federation": {"clients": 1}}, "[federation] clients must be an integer >= 2"),
        ({"federation": {"rounds": 0}}, "[federation] rounds must be an integer >= 1"),
        ({"dp": {"noise_multiplier": 0}}, "noise_multiplier must be a finite number > 0"),
        ({"dp": {"clip_norm": "big"}}, "[dp] clip_norm must be a number"),
        ({"thresholds": {"max_auc": 1.5}}, "max_auc must be in [0, 1]"),
        ({"thresholds": {"max_psnr_over_baseline_db": "3"}}, "must be a number"),
        ({"thresholds": {"empirical_epsilon_within_claimed": 1}}, "must be true or false"),
        ({"claims": {"secagg": ["gradient_inversion", "x"]}}, "unknown attack 'x'"),
        ({"claims": {"tls": []}}, "unknown key(s) tls"),
        ({"claims": {"none": "label_leak"}}, "must be a list of strings"),
    ],
)
def test_bad_configs_name_what_to_fix(doc: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_toml(doc)
    assert message in str(err.value)


def test_unreadable_and_invalid_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[audit\nprofile = 'quick'\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_thresholds_and_config_validate_directly() -> None:
    with pytest.raises(ConfigError, match="max_extraction_rate"):
        Thresholds(max_extraction_rate=-0.1)
    with pytest.raises(ConfigError, match="seed"):
        AuditConfig(seed=-1)
