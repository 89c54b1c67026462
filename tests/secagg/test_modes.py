"""Every aggregation mode is defined once and has its row in every table that dispatches on it.

Why: adding a mode means its AggregationMode member and ModeSpec (secagg.modes) plus one
row in each table keyed by it: its wire number (proto.convert), its client driver
(clients.mode_driver.DRIVERS) and its server rounds (server.round_modes.ROUND_FACTORIES).
A mode missing a row would only fail when a round of it runs; these tests fail first.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fedveil.clients.mode_driver import DRIVERS
from fedveil.errors import ConfigError
from fedveil.proto import aggregation_pb2 as pb
from fedveil.proto.convert import MODE_TO_PB, mode_from_wire, mode_to_wire
from fedveil.secagg.modes import (
    DEFAULT_ALLOWED_MODES,
    MODE_SPECS,
    AggregationMode,
    DPKind,
    mode_spec,
    parse_dp_kind,
    parse_mode,
    parse_modes,
)
from fedveil.secagg.protocol.config import ClientPolicy
from fedveil.server.round_modes import ROUND_FACTORIES

MODES = list(AggregationMode)


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_has_a_spec_that_names_it(mode: AggregationMode) -> None:
    spec = MODE_SPECS[mode]
    assert spec.mode is mode and spec.name == mode.value
    assert mode_spec(mode.value) is spec
    assert "opt in" in spec.how_to_opt_in  # what a refused client is told to do
    assert set(MODE_SPECS) == set(AggregationMode)


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_has_a_wire_number_that_round_trips(mode: AggregationMode) -> None:
    number = mode_to_wire(mode)
    assert number != pb.AGGREGATION_MODE_UNSPECIFIED
    assert mode_from_wire(number) is mode
    assert len(set(MODE_TO_PB.values())) == len(MODE_TO_PB)  # no two modes share a number


def test_unknown_wire_numbers_name_no_mode() -> None:
    assert mode_from_wire(pb.AGGREGATION_MODE_UNSPECIFIED) is None
    assert mode_from_wire(99) is None
    assert set(MODE_TO_PB.values()) == set(pb.AggregationMode.values()) - {
        pb.AGGREGATION_MODE_UNSPECIFIED
    }


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_has_a_client_driver(mode: AggregationMode) -> None:
    driver = DRIVERS[mode](SimpleNamespace(ckks_workers=1), None)  # type: ignore[arg-type]
    assert driver.mode is mode
    assert driver.adds_dp_noise == MODE_SPECS[mode].carries_client_dp


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_has_a_server_round_factory(mode: AggregationMode) -> None:
    assert mode in ROUND_FACTORIES and callable(ROUND_FACTORIES[mode])


def test_the_default_pin_is_secagg_and_policies_take_spellings() -> None:
    assert {AggregationMode.SECAGG} == DEFAULT_ALLOWED_MODES
    assert ClientPolicy().allowed_modes == DEFAULT_ALLOWED_MODES
    policy = ClientPolicy(allowed_modes=frozenset({"secagg", "ckks"}))
    assert policy.allowed_modes == {AggregationMode.SECAGG, AggregationMode.CKKS}
    assert all(isinstance(m, AggregationMode) for m in policy.allowed_modes)
    with pytest.raises(ConfigError, match="allowed_modes must be one of secagg, ckks, plaintext"):
        ClientPolicy(allowed_modes=frozenset({"secagg", "rot13"}))
    with pytest.raises(ConfigError, match="non-empty"):
        ClientPolicy(allowed_modes=frozenset())
    with pytest.raises(ConfigError, match="set of modes"):
        ClientPolicy(allowed_modes="secagg")  # type: ignore[arg-type]


def test_parse_mode_refuses_unknown_names_with_the_choices() -> None:
    assert parse_mode("ckks") is AggregationMode.CKKS
    assert parse_mode(AggregationMode.PLAINTEXT) is AggregationMode.PLAINTEXT
    assert parse_modes(["secagg", "secagg"]) == {AggregationMode.SECAGG}
    with pytest.raises(ConfigError) as info:
        parse_mode("rot13", "round.mode")
    message = str(info.value)
    assert message.startswith("round.mode must be one of") and "'rot13'" in message
    assert all(m.value in message for m in AggregationMode) and "\n" not in message


def test_parse_dp_kind_refuses_unknown_names_with_the_choices() -> None:
    assert parse_dp_kind("client") is DPKind.CLIENT
    assert parse_dp_kind(DPKind.NONE) is DPKind.NONE
    with pytest.raises(ConfigError) as info:
        parse_dp_kind("local", "round.dp")
    message = str(info.value)
    assert message.startswith("round.dp must be one of") and "'local'" in message
    assert all(k.value in message for k in DPKind)
    allowed = (DPKind.NONE, DPKind.CLIENT)
    with pytest.raises(ConfigError, match="must be one of none, client, got 'sample'"):
        parse_dp_kind("sample", allowed=allowed)
