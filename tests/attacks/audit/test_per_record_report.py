"""Per-record risk in the audit report: membership and extraction cells list their
records ranked most exposed first (top N from `[audit] top_records`), each next to the
non-member canaries (never trained on) it is read against; JSON, HTML and Markdown."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from fedveil.attacks.audit.config import config_from_toml, load_config
from fedveil.attacks.audit.evaluate import evaluate_cell
from fedveil.attacks.audit.html import render_html
from fedveil.attacks.audit.markdown import summary_markdown
from fedveil.attacks.audit.output_cells import PER_RECORD_KEY, exposure_of
from fedveil.attacks.audit.report import build_report
from fedveil.attacks.measure.records import JobResult, OutputRecord
from fedveil.errors import ConfigError
from tests.attacks.audit.test_audit_report import DETAILS, _mia_records

# six canaries: three members, three non-members; "loss" scores the members high, but
# one non-member (c4) outscores the weakest member (c2)
CANARIES = [
    {"text": "c0 secret 1111", "member": True, "extracted": True, "exposure": 9.0},
    {"text": "c1 secret 2222", "member": True, "extracted": False, "exposure": 6.0},
    {"text": "c2 secret 3333", "member": True, "extracted": False, "exposure": 1.0},
    {"text": "c3 secret 4444", "member": False, "extracted": False, "exposure": 0.5},
    {"text": "c4 secret 5555", "member": False, "extracted": False, "exposure": 2.0},
    {"text": "c5 secret 6666", "member": False, "extracted": False, "exposure": 0.1},
]
SCORES = {
    "loss": [3.0, 2.5, 0.2, 0.1, 1.0, -1.0],
    "samia_rouge_l": [0.9, 0.1, 0.1, 0.1, 0.1, 0.1],
}


def _records(per_record: bool = True) -> list[OutputRecord]:
    params = dict(DETAILS.params)
    if per_record:
        params[PER_RECORD_KEY] = {"canaries": CANARIES, "scores": SCORES}  # type: ignore[dict-item]
    details = dataclasses.replace(DETAILS, params=params)
    return [dataclasses.replace(r, details=details) for r in _mia_records(0.95, "inf", 1.5)]


def test_membership_cells_rank_records_by_the_strongest_attack() -> None:
    config = load_config(None)
    cell = evaluate_cell(config, "secagg", "likelihood", JobResult(_records(), 2.0))
    exposure = exposure_of(cell)
    assert exposure is not None and exposure.ranked_by == "loss score"
    texts = [r["text"] for r in exposure.records]
    assert texts == [CANARIES[i]["text"] for i in (0, 1, 4, 2, 3, 5)]
    top = exposure.records[0]
    assert top["member"] and top["score"] == 3.0 and top["above_non_members"] == 1.0
    c2 = exposure.records[3]  # the weakest member sits below one non-member
    assert c2["above_non_members"] == pytest.approx(2 / 3)
    assert exposure.baseline == {"non_members": 3, "median": 0.1, "max": 1.0}


def test_extraction_cells_rank_extracted_records_first() -> None:
    config = load_config(None)
    cell = evaluate_cell(config, "secagg", "extraction", JobResult(_records(), 2.0))
    exposure = exposure_of(cell)
    assert exposure is not None
    assert [r["text"] for r in exposure.records][:3] == [CANARIES[i]["text"] for i in (0, 1, 4)]
    assert exposure.records[0]["extracted"] and not exposure.records[1]["extracted"]
    assert exposure.baseline["extraction_rate_non_members"] == 0.0


def test_the_report_lists_the_top_n_in_json_html_and_markdown(tmp_path: Path) -> None:
    config = config_from_toml(
        {
            "audit": {
                "protections": ["none", "secagg"],
                "attacks": ["likelihood", "extraction"],
                "top_records": 2,
            }
        }
    )
    cells = [
        evaluate_cell(config, p, a, JobResult(_records(p == "secagg"), 2.0))
        for p in ("none", "secagg")
        for a in ("likelihood", "extraction")
    ]
    report = build_report(config, cells, 1.0, 8)
    data: Any = report.to_json()
    assert data["top_records"] == 2
    by_name = {f"{c['protection']}/{c['attack']}": c["details"] for c in data["cells"]}
    likelihood = by_name["secagg/likelihood"]["exposed_records"]
    assert likelihood["records_total"] == 6 and len(likelihood["records"]) == 2
    assert likelihood["records"][0]["text"] == "c0 secret 1111"
    assert "exposed_records" not in by_name["none/likelihood"]
    html = render_html(report, tmp_path)
    assert '<section id="records">' in html and html.count("<table class='exposed'>") == 2
    assert "c0 secret 1111" in html and "c2 secret 3333" not in html  # top 2 only
    markdown = summary_markdown(report)
    assert "### Most exposed records" in markdown
    assert "| 1 | c0 secret 1111 | yes | 3 | yes | 100% |" in markdown


def test_records_without_per_record_scores_list_nothing(tmp_path: Path) -> None:
    config = config_from_toml({"audit": {"protections": ["none"], "attacks": ["likelihood"]}})
    cell = evaluate_cell(config, "none", "likelihood", JobResult(_records(False), 2.0))
    assert exposure_of(cell) is None
    report = build_report(config, [cell], 1.0, 8)
    assert "No membership or extraction cell recorded per-record scores" in render_html(
        report, tmp_path
    )
    assert "Most exposed" not in summary_markdown(report)


def test_top_records_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=r"\[audit\] top_records"):
        config_from_toml({"audit": {"top_records": 0}})
