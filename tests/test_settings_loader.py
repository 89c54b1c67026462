"""The one settings loader: every refusal is one ConfigError line that names the key."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import Field

from fedveil.errors import ConfigError
from fedveil.settings_loader import StrictSettings, apply_overrides, load_settings, read_toml


class Demo(StrictSettings):
    settings_where: ClassVar[str] = "round"

    dimension: int = Field(ge=1)
    clip: float = 1.0
    name: str = "x"
    out: Path | None = Field(default=None, strict=False)


def _refusal(values: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(Demo, values, "round")
    text = str(info.value)
    assert "\n" not in text and "Traceback" not in text and "pydantic" not in text, text
    assert info.value.__cause__ is None and info.value.__suppress_context__, text
    return text


def test_an_unknown_key_is_refused_by_name_with_the_known_keys() -> None:
    text = _refusal({"dimension": 3, "colour": "red"})
    assert text.startswith("round.colour: unknown key; known keys: ")
    assert "clip, dimension, name, out" in text


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"dimension": "3"}, "round.dimension: must be an integer, got '3'"),
        ({"dimension": True}, "round.dimension: must be an integer, got True"),
        ({"dimension": 3, "clip": "1.0"}, "round.clip: must be a number"),
        ({"dimension": 3, "name": 5}, "round.name: must be a string, got 5"),
        ({"dimension": 3, "out": 5}, "round.out: must be a path string, got 5"),
        ({"dimension": 3, "clip": float("inf")}, "round.clip: must be a finite number"),
    ],
)
def test_a_wrong_type_is_refused_by_name_without_coercion(
    values: dict[str, object], expected: str
) -> None:
    assert _refusal(values).startswith(expected)


def test_out_of_range_and_missing_are_refused_by_name() -> None:
    assert _refusal({"dimension": 0}) == "round.dimension: must be >= 1, got 0"
    assert _refusal({}) == "round.dimension: is required"


def test_an_int_is_a_float_and_a_path_may_be_a_string() -> None:
    loaded = load_settings(Demo, {"dimension": 2, "clip": 3, "out": "a/b.npy"}, "round")
    assert loaded.clip == 3.0 and isinstance(loaded.clip, float)
    assert loaded.out == Path("a/b.npy")


def test_direct_construction_and_replace_refuse_the_same_way() -> None:
    with pytest.raises(ConfigError, match=r"^round\.dimension: must be >= 1, got 0$"):
        Demo(dimension=0)
    demo = Demo(dimension=2)
    assert demo.replace(clip=0.5).clip == 0.5 and demo.clip == 1.0
    with pytest.raises(ConfigError, match=r"^round\.dimension: must be >= 1"):
        demo.replace(dimension=0)
    with pytest.raises(ConfigError, match="colour: unknown key"):
        demo.replace(colour=1)


def test_a_flag_override_wins_over_toml(tmp_path: Path) -> None:
    config = tmp_path / "settings.toml"
    config.write_text("[round]\ndimension = 10\nclip = 2.0\n")
    table = read_toml(config, "config file")["round"]
    assert isinstance(table, dict)
    merged = apply_overrides(table, {"dimension": 20, "clip": None, "name": "y"})
    assert merged == {"dimension": 20, "clip": 2.0, "name": "y"}  # None: flag not given
    loaded = load_settings(Demo, merged, "round")
    assert (loaded.dimension, loaded.clip, loaded.name) == (20, 2.0, "y")


def test_a_bad_file_is_one_line_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file .*absent.toml does not exist"):
        read_toml(tmp_path / "absent.toml", "config file")
    with pytest.raises(ConfigError, match="cannot read the config file"):
        read_toml(tmp_path, "config file")
    bad = tmp_path / "bad.toml"
    bad.write_text("[round\n")
    with pytest.raises(ConfigError, match="bad.toml is not valid TOML"):
        read_toml(bad, "config file")
    bad.write_bytes(b"\xff\xfe[round]\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_toml(bad, "config file")


def test_the_server_and_client_commands_name_their_keys(tmp_path: Path) -> None:
    from fedveil.commands.client_settings import load_client_settings
    from fedveil.server.settings import load_settings as load_server_settings

    config = tmp_path / "server.toml"
    config.write_text('[round]\ndimension = 3\ncolour = "red"\nmodel_hash = "' + "ab" * 32 + '"\n')
    with pytest.raises(ConfigError, match=r"^round\.colour: unknown key; known keys: "):
        load_server_settings(config, {"insecure": True})
    client = tmp_path / "client.toml"
    client.write_text("[client]\nweight = 2\nmin-cohort = 4\n")
    flags = {"server": "h:1", "credentials": "c", "roster": "r", "update": "u.npy", "weight": 5}
    loaded = load_client_settings(client, flags)
    assert loaded.weight == 5 and loaded.min_cohort == 4  # the flag wins, the file fills in
