"""`fedveil simulate-secagg` runs a round end to end and reports it; bad flags exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedveil.cli import main


def test_simulate_secagg_reports_every_stage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"
    status = main(
        ["simulate-secagg", "--clients", "8", "--dim", "2000", "--drop", "0.25", "--json", str(out)]
    )
    assert status == 0
    printed = capsys.readouterr().out
    for stage in ("advertise-keys", "share-keys", "masked-input", "consistency-check", "unmask"):
        assert stage in printed
    assert "round DONE" in printed
    report = json.loads(out.read_text())
    assert report["final_stage"] == "done"
    assert len(report["dropouts"]) == 2
    assert report["max_abs_error"] <= report["error_bound"]


def test_simulate_secagg_below_threshold_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        [
            "simulate-secagg",
            "--clients",
            "5",
            "--dim",
            "100",
            "--drop",
            "0.8",
            "--drop-stage",
            "share-keys",
        ]
    )
    assert status == 1
    assert "round FAILED at share-keys" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--clients", "1"], "--clients must be at least 2"),
        (["--drop", "1.5"], "--drop must be in [0, 1)"),
        (["--bits", "4"], "bits"),
        (["--neighbours", "3", "--threshold", "2", "--clients", "10"], "strict majority"),
    ],
)
def test_bad_flags_exit_2_with_a_reason(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate-secagg", "--dim", "10", *flags]) == 2
    assert message in capsys.readouterr().err


def test_unknown_stage_is_rejected() -> None:
    with pytest.raises(SystemExit) as info:
        main(["simulate-secagg", "--drop-stage", "nowhere"])
    assert info.value.code == 2
