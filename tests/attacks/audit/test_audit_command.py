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

# The LM-head token-bag attack recovers the cohort's target tokens through the SecAgg+
# mean (issue 17), so secagg/text is no longer a claim that holds: the passing run
# claims labels only and reports text.
PASSING = SMALL + '\n[claims]\nsecagg = ["labels"]\n'


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
    assert _audit(tmp_path, PASSING) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["passed"] and report["schema"] == "fedveil.audit/2"
    cells = {(c["protection"], c["attack"]): c for c in report["cells"]}
    # both directions: a plain update leaks, the SecAgg+ aggregate of 10 clients does not
    assert cells["none", "text"]["status"] == "leaks"
    assert cells["none", "text"]["metrics"]["token_f1"] >= 0.9
    assert cells["secagg", "text"]["claimed_protected"] is False
    assert cells["secagg", "text"]["seeds"] == 4
    assert cells["none", "labels"]["metrics"]["label_attribution_acc"] == 1.0
    # never a breach; pass when the held-out seeds' interval stays under the threshold,
    # inconclusive when it straddles it (four seeds at n = 10 sit close)
    assert cells["secagg", "labels"]["status"] in ("pass", "inconclusive")
    assert cells["secagg", "labels"]["positive_control"] is True
    assert (tmp_path / "out" / "report.html").stat().st_size > 1000
    assert "all claimed protections held" in capsys.readouterr().out

    assert _audit(tmp_path, PASSING) == 0  # nothing recomputed
    again = json.loads((tmp_path / "out" / "report.json").read_text())
    jobs = [
        f"{p}__{m}{s}"
        for p in ("none", "secagg")
        for m in ("label_leak", "text_recovery", "captioner")
        for s in ("", "__seed1", "__seed2", "__seed3")  # the quick profile's four seeds
    ]
    assert sorted(again["reused_jobs"]) == sorted(jobs)
    assert again["cells"] == report["cells"]


def test_a_breach_of_a_claimed_cell_exits_1_naming_cell_metric_value_threshold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    claims = '\n[claims]\nnone = ["text"]\nsecagg = ["labels"]\n'  # see PASSING
    config = SMALL.replace('"labels", ', "") + claims
    assert _audit(tmp_path, config) == 1
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("BREACH")]
    assert len(lines) == 1
    assert lines[0].startswith("BREACH none/text: token_f1_over_baseline = ")
    assert "exceeds the threshold 0.2 (" in lines[0]  # then the interval that crossed it


def test_configuration_errors_exit_2_before_running_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _audit(tmp_path, "[thresholds]\nmax_auc = 2\n") == 2
    assert "[thresholds] max_auc: must be in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main(["audit", "--out", str(tmp_path / "o"), "--workers", "0"]) == 2
