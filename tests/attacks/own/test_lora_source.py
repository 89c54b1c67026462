"""Where `fedveil attack` takes the adapter from (attacks.own.lora_source)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedveil.attacks.own.lora_source import settings_from_file, settings_from_flags
from fedveil.errors import ConfigError
from fedveil.learner.lora.config import AggregationVariant


def test_a_lora_table_and_flags_give_the_same_settings(tmp_path: Path) -> None:
    path = tmp_path / "party.toml"
    path.write_text('[lora]\nrank = 4\nalpha = 8\nvariant = "fedavg"\n')
    from_file = settings_from_file(path)
    assert from_file.plan is None
    assert from_file.settings == settings_from_flags(4, 8.0, None, "fedavg", None).settings
    assert from_file.settings.variant is AggregationVariant.FEDAVG


def test_bad_files_are_refused_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[lora]\nrank = 4\nranks = 8\n")
    with pytest.raises(ConfigError, match="unknown key 'ranks'"):
        settings_from_file(path)
    path.write_text('[lora]\nvariant = "lora"\n')
    with pytest.raises(ConfigError, match="variant must be one of"):
        settings_from_file(path)
    path.write_text("[round]\nmode = 'secagg'\n")
    with pytest.raises(ConfigError, match=r"neither a \[federation.lora\]"):
        settings_from_file(path)
    path.write_text("[lora\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        settings_from_file(path)
    path.write_text('[federation]\nname = "x"\n[federation.lora]\nrank = 8\n')
    with pytest.raises(ConfigError, match="base_model_hash"):
        settings_from_file(path)
