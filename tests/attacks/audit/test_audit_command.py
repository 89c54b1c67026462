"""`fedveil audit` end to end on a small matrix: real attacks on the real rounds' views,
exit status 0 / 1 / 2, breach lines, and resuming without recomputing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedveil.cli import main

SMALL = """
[audit]
protections = ["none", "secagg"]
attacks = ["labels", "text"]
"""


def _audit(tmp_path: Path, config: str, *extra: str) -> int:
    path = tmp_path / "audit.toml"
    path.write_text(config)
    out = tmp_path / "out"
    return main(
        [
            "audit",
            "--config",
            str(path),
            "--out",
            str(out),
            "--workers",
            "1",
            "--no-progress",
            *extra,
        ]
    )


def test_a_small_audit_passes_then_resumes_from_its_stored_jobs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _audit(tmp_path, SMALL) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["passed"] and report["schema"] == "fedveil.audit/1"
    cells = {(c["protection"], c["attack"]): c for c in report["cells"]}
    # both directions: a plain update leaks, the SecAgg+ aggregate of 10 clients does not
    assert cells["none", "text"]["status"] == "leaks"
    assert cells["none", "text"]["metrics"]["token_f1"] >= 0.9
    assert cells["secagg", "text"]["status"] == "pass"
    assert cells["none", "labels"]["metrics"]["label_attribution_acc"] == 1.0
    assert cells["secagg", "labels"]["status"] == "pass"
    assert (tmp_path / "out" / "report.html").stat().st_size > 1000
    assert "all claimed protections held" in capsys.readouterr().out

    assert _audit(tmp_path, SMALL) == 0  # nothing recomputed
    again = json.loads((tmp_path / "out" / "report.json").read_text())
    assert sorted(again["reused_jobs"]) == sorted(
        [
            "none__label_leak",
            "secagg__label_leak",
            "none__text_recovery",
            "secagg__text_recovery",
            "none__captioner",
            "secagg__captioner",
        ]
    )
    assert again["cells"] == report["cells"]


def test_a_breach_of_a_claimed_cell_exits_1_naming_cell_metric_value_threshold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = SMALL.replace('"labels", ', "") + '\n[claims]\nnone = ["text"]\n'
    assert _audit(tmp_path, config) == 1
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("BREACH")]
    assert len(lines) == 1
    assert lines[0].startswith("BREACH none/text: token_f1_over_baseline = ")
    assert lines[0].endswith("exceeds the threshold 0.2")


def test_configuration_errors_exit_2_before_running_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _audit(tmp_path, "[thresholds]\nmax_auc = 2\n") == 2
    assert "[thresholds] max_auc: must be in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main(["audit", "--out", str(tmp_path / "o"), "--workers", "0"]) == 2
