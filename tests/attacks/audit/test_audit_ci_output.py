"""CI-native audit output: JUnit XML and the Markdown job summary read through one
outcome function, progress bars off outside a terminal, and a job store whose
fingerprint changes with the code and dependency versions."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from fedveil.attacks.audit import store
from fedveil.attacks.audit.config import AuditConfig, load_config
from fedveil.attacks.audit.evaluate import Cell, breach_lines, evaluate_cell
from fedveil.attacks.audit.junit import write_junit
from fedveil.attacks.audit.markdown import summary_markdown, write_summary
from fedveil.attacks.audit.outcome import cell_outcome
from fedveil.attacks.audit.report import AuditReport, build_report
from fedveil.attacks.measure.records import JobResult, LeakRecord
from fedveil.cli import main
from fedveil.commands.audit import show_progress


def _labels(acc: float) -> JobResult:
    params = {"attack": "label_attribution"}
    return JobResult(
        [LeakRecord("lenet-32", "none", 10, "label_attribution_acc", acc, 0.1, 0.1, params)], 1.0
    )


def _seeds(acc: float) -> list[JobResult]:
    """Three seeds that agree: an interval of width zero, so the verdict is conclusive."""
    return [_labels(acc)] * 3


def _config() -> AuditConfig:
    return load_config(None)


def _report() -> tuple[AuditReport, dict[str, Cell]]:
    """secagg/labels breached, ckks/labels held, dp-sgd/labels not run, secagg+client-dp's
    job failed; none/labels is unclaimed (it leaks and is only reported)."""
    config = _config()
    cells = {
        "none": evaluate_cell(config, "none", "labels", _seeds(1.0)),
        "secagg": evaluate_cell(config, "secagg", "labels", _seeds(0.9)),
        "ckks": evaluate_cell(config, "ckks", "labels", _seeds(0.1)),
        "dp-sgd": evaluate_cell(config, "dp-sgd", "labels", None),
        "secagg+client-dp": evaluate_cell(config, "secagg+client-dp", "labels", JobResult([], 0.0)),
    }
    cells["secagg+client-dp"].details.error = "label_leak: RuntimeError: boom"
    return build_report(config, list(cells.values()), 3.0, 16), cells


def test_cell_outcome_maps_status_and_errors_and_prefers_a_verdict() -> None:
    _, cells = _report()
    assert cell_outcome(cells["none"]).kind == "report"
    assert cell_outcome(cells["ckks"]).kind == "pass"
    failed = cell_outcome(cells["secagg"])
    assert failed.kind == "fail" and failed.message == "\n".join(breach_lines([cells["secagg"]]))
    assert cell_outcome(cells["dp-sgd"]).kind == "skip"
    assert cell_outcome(cells["secagg+client-dp"]).kind == "error"
    held = cells["ckks"]
    for verdict in ("inconclusive", "vacuous"):  # the cell's verdict, with its reason
        held.status = verdict
        held.reason = "the positive control did not leak"
        outcome = cell_outcome(held)
        assert (outcome.kind, outcome.label) == ("skip", verdict)
        assert "positive control" in outcome.message


def test_junit_has_one_testcase_per_claimed_cell_with_failures_and_skips(tmp_path: Path) -> None:
    report, cells = _report()
    path = tmp_path / "audit.xml"
    write_junit(report, path)
    root = ET.parse(path).getroot()
    cases = {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}
    assert set(cases) == {
        (p, "labels") for p in ("secagg", "ckks", "dp-sgd", "secagg+client-dp")
    }  # none/labels is unclaimed: not a test
    failure = cases["secagg", "labels"].find("failure")
    assert failure is not None and failure.text == breach_lines([cells["secagg"]])[0]
    assert failure.get("message", "").startswith("BREACH secagg/labels: label_attribution_acc")
    assert list(cases["ckks", "labels"]) == []  # a pass has no child
    assert cases["dp-sgd", "labels"].find("skipped") is not None
    error = cases["secagg+client-dp", "labels"].find("error")
    assert error is not None and "boom" in error.get("message", "")
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "1", "1")
    assert suite.get("errors") == "1"


def test_markdown_summary_has_the_matrix_the_breaches_and_the_unjudged() -> None:
    report, _ = _report()
    text = summary_markdown(report)
    assert "| protection | labels |" in text
    assert "| none | leaks label_attribution_acc 1 |" in text
    assert "| secagg | **breach** label_attribution_acc 0.9 |" in text
    assert "| dp-sgd | **not run** |" in text
    for line in report.breaches:
        assert line in text
    assert "- secagg+client-dp/labels: error: the job failed:" in text
    assert "- dp-sgd/labels: not run:" in text


def test_the_summary_is_appended_to_github_step_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedveil.commands import audit as command

    report, _ = _report()
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    command._write_ci_files(report, None, None)
    assert summary.read_text() == "earlier step\n" + summary_markdown(report)
    explicit = tmp_path / "explicit.md"
    command._write_ci_files(report, None, explicit)  # --summary wins, the env file is kept
    assert explicit.read_text() == summary_markdown(report)
    assert summary.read_text().count("## fedveil audit") == 1
    write_summary(report, explicit, append=True)
    assert explicit.read_text().count("## fedveil audit") == 2


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_is_off_when_stdout_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr", _Stream(True))
    monkeypatch.setattr("sys.stdout", _Stream(False))
    assert show_progress(False) is False
    monkeypatch.setattr("sys.stdout", _Stream(True))
    assert show_progress(False) is True
    assert show_progress(True) is False


def test_the_fingerprint_follows_code_and_dependency_versions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = {"quick": True, "seed": 0}
    first = store.fingerprint(settings, "none__label_leak")
    assert store.fingerprint(settings, "none__label_leak") == first  # stable
    assert store.fingerprint(settings, "secagg__label_leak") != first
    monkeypatch.setattr(store, "source_digest", lambda: "another source tree")
    changed_code = store.fingerprint(settings, "none__label_leak")
    assert changed_code != first
    versions = dict(store.dependency_versions(), torch="9.9.9")
    monkeypatch.setattr(store, "dependency_versions", lambda: versions)
    assert store.fingerprint(settings, "none__label_leak") not in (first, changed_code)


def test_the_source_digest_covers_job_code_only(tmp_path: Path) -> None:
    for relative in (
        "attacks/update/labels.py",
        "attacks/audit/jobs.py",
        "attacks/audit/html.py",
        "commands/audit.py",
        "learner/lora.py",
    ):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("x = 1\n")
    before = store.tree_digest(tmp_path)
    assert store.tree_digest(tmp_path) == before
    for unjudged in ("attacks/audit/html.py", "commands/audit.py"):  # reporting: not job code
        (tmp_path / unjudged).write_text("x = 2\n")
    assert store.tree_digest(tmp_path) == before
    for relative in ("attacks/update/labels.py", "attacks/audit/jobs.py", "learner/lora.py"):
        (tmp_path / relative).write_text("x = 1  # changed\n")
        assert store.tree_digest(tmp_path) != before
        before = store.tree_digest(tmp_path)
    assert store.source_digest() == store.tree_digest(store.PACKAGE_ROOT)


def test_a_stored_job_of_other_code_is_recomputed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = store.JobStore(tmp_path)
    fp = store.fingerprint({"seed": 0}, "none__label_leak")
    jobs.save("none__label_leak", fp, _labels(1.0))
    stored = json.loads((tmp_path / "work" / "none__label_leak.json").read_text())
    assert stored["code"] == store.code_identity()
    assert jobs.load("none__label_leak", fp) is not None
    monkeypatch.setattr(store, "source_digest", lambda: "edited attack code")
    assert jobs.load("none__label_leak", store.fingerprint({"seed": 0}, "none__label_leak")) is None


SMALL = """
[audit]
protections = ["none", "secagg"]
attacks = ["labels"]
"""


def test_audit_writes_junit_and_summary_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    config = tmp_path / "audit.toml"
    config.write_text(SMALL)
    junit, summary = tmp_path / "audit.xml", tmp_path / "summary.md"
    argv = ["audit", "--config", str(config), "--out", str(tmp_path / "out"), "--workers", "1"]
    assert main([*argv, "--junit", str(junit), "--summary", str(summary)]) == 0
    cases = list(ET.parse(junit).getroot().iter("testcase"))
    assert [(c.get("classname"), c.get("name")) for c in cases] == [("secagg", "labels")]
    assert cases[0].find("failure") is None and cases[0].find("error") is None
    text = summary.read_text()
    assert "| protection | labels |" in text
    assert "| none | leaks label_attribution_acc 1 |" in text
    assert "| secagg | **" in text and "### Breaches" not in text


def test_unwritable_ci_files_are_configuration_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    missing = tmp_path / "no" / "such" / "audit.xml"
    assert main(["audit", "--out", str(out), "--junit", str(missing)]) == 2
    assert "--junit" in capsys.readouterr().err and not out.exists()
    assert main(["audit", "--out", str(out), "--summary", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
