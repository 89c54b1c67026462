"""The audit's multi-round observer rows, both ways, on real in-process SecAgg+ rounds.

A server keeping five rounds of five one-sentence clients recovers their distinct words
under FedAvg-LoRA (the open row) and nothing under fedveil's FFA-LoRA (the claimed row,
with the FedAvg run as its positive control); an FFA adapter that no longer freezes A,
built through the learner's own apply_lora, turns the claimed row into a BREACH line and
a JUnit failure; a control that does not leak leaves the claimed row inconclusive.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fedveil.attacks.audit import observer_job
from fedveil.attacks.audit.active_rows import OPEN
from fedveil.attacks.audit.config import AuditConfig, config_from_toml
from fedveil.attacks.audit.html import active_table
from fedveil.attacks.audit.junit import junit_tree
from fedveil.attacks.audit.markdown import summary_markdown
from fedveil.attacks.audit.observer_rows import (
    FFA_ROW,
    HELD,
    INCONCLUSIVE,
    ObserverRow,
    ObserverSettings,
    applies,
    observer_rows,
)
from fedveil.attacks.audit.report import build_report
from fedveil.cli import main
from fedveil.errors import ConfigError
from fedveil.learner.lora.config import LoraSettings
from fedveil.runners.aggregators import real_aggregators

SEEDS = 3
THRESHOLD = 0.2  # the text column's max_token_f1_over_baseline


def _rows(settings: ObserverSettings | None = None) -> dict[str, ObserverRow]:
    rows = observer_rows(
        settings or ObserverSettings(),
        seed=0,
        seeds=SEEDS,
        threshold=THRESHOLD,
        aggregate=real_aggregators().secagg,
    )
    return {r.name: r for r in rows}


def _junit_cases(rows: list[ObserverRow]) -> dict[tuple[str | None, str | None], ET.Element]:
    report = build_report(AuditConfig(), [], 1.0, 16, active=rows)
    root = junit_tree(report).getroot()
    return {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}


def _with_lora_a(trains: bool) -> Callable[[torch.nn.Module, LoraSettings], torch.nn.Module]:
    """fedveil's apply_lora, then every lora_A set to train (`trains`) or frozen."""
    real = observer_job.apply_lora

    def adapted(model: torch.nn.Module, settings: LoraSettings) -> torch.nn.Module:
        peft_model = real(model, settings)
        for name, parameter in peft_model.named_parameters():
            if ".lora_A." in name:
                parameter.requires_grad_(trains)
        return peft_model

    return adapted


@pytest.fixture(scope="module")
def normal() -> dict[str, ObserverRow]:
    return _rows()


def test_fedavg_row_leaks_and_the_ffa_row_holds_with_its_control(
    normal: dict[str, ObserverRow],
) -> None:
    fedavg, ffa = normal["observer/fedavg-multi-round"], normal["observer/ffa-multi-round"]
    # FedAvg-LoRA: the stacked A rows give the cohort's distinct words back; open, unclaimed
    assert (fedavg.expected, fedavg.observed) == (OPEN, OPEN) and not fedavg.claimed
    assert fedavg.metrics["bag_f1"] >= 0.95 and fedavg.baselines["bag_f1"] <= 0.7
    assert fedavg.intervals["bag_f1"][0] > THRESHOLD, fedavg.detail
    assert fedavg.seeds == SEEDS and fedavg.level == pytest.approx(0.975)
    assert not fedavg.breached
    # FFA-LoRA, same clients and budget: rank r, nothing; held, with a control that leaked
    assert (ffa.expected, ffa.observed) == (HELD, HELD), ffa.detail
    assert ffa.claimed and ffa.positive_control is True and not ffa.breached
    assert ffa.metrics == {"bag_f1": 0.0, "token_f1": 0.0}
    assert all(high <= THRESHOLD for _, high in ffa.intervals.values())
    assert "stacked rank 16 (A frozen: B rows)" in ffa.detail
    # reported like the active rows: report.json, the summary; only the claimed row is a test
    report = build_report(AuditConfig(), [], 1.0, 16, active=list(normal.values()))
    assert report.passed and report.breaches == []
    stored = {r["name"]: r for r in json.loads(json.dumps(report.to_json()))["active_adversaries"]}
    assert stored["observer/ffa-multi-round"]["observed"] == HELD
    assert stored["observer/fedavg-multi-round"]["excess_intervals"]["bag_f1"][0] > THRESHOLD
    assert "| observer/ffa-multi-round | held | held |" in summary_markdown(report)
    assert report.notes() == []
    assert f"<td class='ok'>{HELD}</td>" in active_table(report)
    cases = _junit_cases(list(normal.values()))
    assert list(cases) == [("observer", FFA_ROW)]
    assert list(cases["observer", FFA_ROW]) == []  # a pass has no child


def test_an_ffa_adapter_that_trains_a_is_a_breach(monkeypatch: pytest.MonkeyPatch) -> None:
    """The claimed row's adapter comes from the learner's apply_lora; with FFA's A left to
    train there, the observer recovers the words and the row is a BREACH."""
    monkeypatch.setattr(observer_job, "apply_lora", _with_lora_a(trains=True))
    row = _rows(ObserverSettings(rows=(FFA_ROW,)))["observer/ffa-multi-round"]
    assert row.observed == OPEN and row.breached, row.detail
    assert row.metrics["bag_f1"] >= 0.95 and "A frozen" not in row.detail
    line = row.breach_line()
    assert line.startswith("BREACH observer/ffa-multi-round: bag_f1_over_baseline = ")
    assert "exceeds the threshold 0.2 (0.975 CI " in line
    report = build_report(AuditConfig(), [], 1.0, 16, active=[row])
    assert not report.passed and report.breaches == [line]
    failure = _junit_cases([row])["observer", FFA_ROW].find("failure")
    assert failure is not None and failure.text == line


def test_a_control_that_does_not_leak_leaves_the_ffa_row_inconclusive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every A frozen (the FedAvg control included): the observer cannot leak anywhere, so
    the FFA row's "nothing recovered" shows nothing and is not a pass."""
    monkeypatch.setattr(observer_job, "apply_lora", _with_lora_a(trains=False))
    rows = _rows()
    assert rows["observer/fedavg-multi-round"].observed == HELD
    ffa = rows["observer/ffa-multi-round"]
    assert ffa.observed == INCONCLUSIVE and ffa.positive_control is False
    assert not ffa.breached and ffa.reason is not None and "positive control" in ffa.reason
    skipped = _junit_cases(list(rows.values()))["observer", FFA_ROW].find("skipped")
    assert skipped is not None and "positive control" in skipped.get("message", "")
    # listed as not judged a pass, and not coloured as one in report.html
    report = build_report(AuditConfig(), [], 1.0, 16, active=list(rows.values()))
    assert report.passed and report.notes() == [f"INCONCLUSIVE observer/{FFA_ROW}: {ffa.reason}"]
    assert report.to_json()["notes"] == report.notes()
    page = active_table(report)
    assert f"<td class='warn'>{INCONCLUSIVE}</td>" in page
    assert f"<td class='ok'>{INCONCLUSIVE}</td>" not in page


def test_the_rows_run_with_the_text_column_of_the_secagg_row() -> None:
    text = {"audit": {"protections": ["none", "secagg"], "attacks": ["text"]}}
    assert applies(config_from_toml(text))
    assert not applies(config_from_toml({**text, "observer": {"rows": []}}))
    assert not applies(config_from_toml({"audit": {"attacks": ["labels"]}}))
    assert not applies(config_from_toml({"audit": {"protections": ["none"]}}))
    settings = config_from_toml({"observer": {"rows": [FFA_ROW], "rounds": 3}}).observer
    assert (settings.rows, settings.clients, settings.rounds, settings.rank) == (
        (FFA_ROW,),
        5,
        3,
        16,
    )


@pytest.mark.parametrize(
    ("observer", "message"),
    [
        ({"rounds": 0}, "[observer] rounds: must be >= 1"),
        ({"clients": 1}, "[observer] clients: must be >= 2"),
        ({"rank": 65}, "[observer] rank: must be <= 64"),
        ({"rows": ["dager"]}, "[observer] rows: unknown row 'dager'"),
        ({"rows": "ffa-multi-round"}, "[observer] rows: must be a list of strings"),
        ({"rows": [FFA_ROW, FFA_ROW]}, "[observer] rows: has duplicates"),
        ({"seeds": 3}, "[observer] seeds: unknown key"),
    ],
)
def test_bad_observer_settings_are_config_errors(observer: object, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        config_from_toml({"observer": observer})
    assert str(error.value).startswith(message), error.value


@pytest.mark.slow
def test_the_audit_reports_the_rows_and_gates_on_the_claimed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fedveil audit` end to end: the rows in report.json and the JUnit file; with FFA's A
    left to train, exit 1 and the BREACH line on stdout."""
    config = tmp_path / "audit.toml"
    config.write_text(
        '[audit]\nprotections = ["secagg"]\nattacks = ["text"]\n\n[federation]\nclients = 3\n'
    )
    junit = tmp_path / "audit.xml"
    argv = ["audit", "--config", str(config), "--workers", "1", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "a"), "--junit", str(junit)]) == 0
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    observed = {r["name"]: r["observed"] for r in report["active_adversaries"]}
    assert observed["observer/fedavg-multi-round"] == OPEN
    assert observed["observer/ffa-multi-round"] == HELD
    cases = [
        (c.get("classname"), c.get("name")) for c in ET.parse(junit).getroot().iter("testcase")
    ]
    assert ("observer", FFA_ROW) in cases
    capsys.readouterr()
    monkeypatch.setattr(observer_job, "apply_lora", _with_lora_a(trains=True))
    assert main([*argv, "--out", str(tmp_path / "a")]) == 1  # the jobs reused, rows rerun
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("BREACH")]
    assert [ln for ln in lines if ln.startswith("BREACH observer/ffa-multi-round:")], lines
