"""Verdicts with confidence: breach / pass / inconclusive from intervals, positive
controls across cells, the utility floor, the multiplicity correction, the figures of
report.html, and report.json's per-cell fields (records built directly)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from fedveil.attacks.audit.confidence import clopper_pearson, corrected_level, t_interval
from fedveil.attacks.audit.config import AuditConfig, config_from_toml
from fedveil.attacks.audit.evaluate import (
    BREACH,
    INCONCLUSIVE,
    PASS,
    VACUOUS,
    evaluate_cell,
    evaluate_cells,
)
from fedveil.attacks.audit.html import render_html
from fedveil.attacks.audit.report import build_report, write_report
from fedveil.attacks.measure.records import JobResult, LeakRecord, OutputDetails, OutputRecord, Roc
from fedveil.attacks.update.metrics import save_grid

F1_LIMIT = 0.2  # the default max_token_f1_over_baseline


def _text_claimed() -> AuditConfig:
    """The default claims plus `text` for secagg: the claim a user might make, which the
    token-bag attack refutes on real aggregates (the defaults no longer make it)."""
    return config_from_toml({"claims": {"secagg": ["inversion", "labels", "text"]}})


TEXT_CLAIMED = dict(_text_claimed().claims)


def _text(f1s: list[float], attacks: int = 1, protection: str = "secagg") -> list[JobResult]:
    """One JobResult per seed: `attacks` text attacks, each with the seed's token F1."""
    return [
        JobResult(
            [
                LeakRecord("gpt2", protection, 3, "token_f1", f1, 0.0, 0.1, {"attack": f"a{i}"})
                for i in range(attacks)
            ],
            1.0,
        )
        for f1 in f1s
    ]


def _details(heldout: float, base: float) -> OutputDetails:
    return OutputDetails(
        n_canaries=48,
        n_members=24,
        delta=1e-5,
        mean_exposure_members=1.0,
        mean_exposure_non_members=1.0,
        exposure_log2_space=[10.0],
        heldout_loss=heldout,
        base_heldout_loss=base,
        train_loss=1.0,
        extraction_rate_non_members=0.0,
    )


def _auc(auc: float, heldout: float = 3.0, base: float = 3.2) -> JobResult:
    record = OutputRecord(
        protection="dp-sgd",
        attack="loss",
        attack_family="likelihood",
        auc=auc,
        auc_low=auc - 0.02,
        auc_high=auc + 0.02,
        tpr_at_1pct_fpr=0.0,
        tpr_at_1pct_fpr_low=0.0,
        tpr_at_1pct_fpr_high=0.05,
        tpr_at_01pct_fpr=0.0,
        tpr_at_01pct_fpr_low=0.0,
        tpr_at_01pct_fpr_high=0.0,
        min_fpr=1 / 24,
        epsilon_claimed=100.0,
        epsilon_lower_bound=0.1,
        epsilon_lower_bound_cp=0.1,
        audit_passed=True,
        extraction_rate=0.0,
        extraction_rate_filtered=0.0,
        filter_fpr=0.0,
        seconds=1.0,
        train_seconds=1.0,
        roc=Roc([], []),
        details=_details(heldout, base),
    )
    return JobResult([record], 1.0)


def test_breach_only_when_the_low_end_crosses_the_threshold() -> None:
    config = _text_claimed()
    cell = evaluate_cell(config, "secagg", "text", _text([0.6, 0.62, 0.58]))
    assert cell.status == BREACH and cell.ci_low is not None and cell.ci_low > F1_LIMIT
    # the same mean with a spread that reaches below the threshold: not a breach
    wide = evaluate_cell(config, "secagg", "text", _text([0.0, 0.6, 1.2]))
    assert wide.status == INCONCLUSIVE and wide.ci_low is not None and wide.ci_low < F1_LIMIT
    assert wide.reason is not None and "token_f1" in wide.reason


def test_pass_only_when_the_high_end_stays_under() -> None:
    config = _text_claimed()
    held = evaluate_cell(config, "secagg", "text", _text([0.01, 0.02, 0.0]))
    assert held.status == PASS and held.ci_high is not None and held.ci_high <= F1_LIMIT
    straddles = evaluate_cell(config, "secagg", "text", _text([0.0, 0.15, 0.05]))
    assert straddles.status == INCONCLUSIVE
    assert straddles.ci_high is not None and straddles.ci_high > F1_LIMIT
    assert evaluate_cell(config, "secagg", "text", _text([0.01])).status == INCONCLUSIVE


def test_membership_and_extraction_use_the_records_intervals() -> None:
    config = _text_claimed()
    assert evaluate_cell(config, "dp-sgd", "likelihood", _auc(0.9)).status == BREACH
    assert evaluate_cell(config, "dp-sgd", "likelihood", _auc(0.55)).status == PASS
    assert evaluate_cell(config, "dp-sgd", "likelihood", _auc(0.75)).status == INCONCLUSIVE
    low, high = clopper_pearson(0, 24, 0.95)
    assert low == 0.0 and 0.1 < high < 0.2


def test_a_protected_pass_whose_attack_fails_on_none_is_inconclusive() -> None:
    config = _text_claimed()
    quiet = _text([0.0, 0.01, 0.0])
    leaky = _text([1.0, 1.0, 1.0], protection="none")
    failed = evaluate_cells(config, [("none", "text", quiet), ("secagg", "text", quiet)])
    cell = {c.protection.value: c for c in failed}["secagg"]
    assert cell.status == INCONCLUSIVE and cell.positive_control is False
    assert cell.reason is not None
    assert "did not leak on the unprotected cell none/text at the same budget" in cell.reason
    ok = evaluate_cells(config, [("none", "text", leaky), ("secagg", "text", quiet)])
    cell = {c.protection.value: c for c in ok}["secagg"]
    assert cell.status == PASS and cell.positive_control is True
    # no `none` row audited: not checked, and a pass cannot stand on it; a breach can
    alone = AuditConfig(protections=("secagg",), attacks=("text",), claims=TEXT_CLAIMED)
    (cell,) = evaluate_cells(alone, [("secagg", "text", quiet)])
    assert cell.status == INCONCLUSIVE and cell.positive_control is None
    (cell,) = evaluate_cells(alone, [("secagg", "text", _text([0.9, 0.9, 0.9]))])
    assert cell.status == BREACH and cell.positive_control is None


def test_a_dp_cell_whose_model_did_not_beat_the_base_model_is_vacuous() -> None:
    config = _text_claimed()
    learned_nothing = _auc(0.55, heldout=3.2, base=3.2)
    cell = evaluate_cell(config, "dp-sgd", "likelihood", learned_nothing)
    assert cell.status == VACUOUS and cell.utility is not None and not cell.utility.learned
    assert cell.reason is not None and "did not learn" in cell.reason
    # no DP on the row: no utility floor (the cell is not claimed, so it only reports)
    assert evaluate_cell(config, "secagg", "likelihood", learned_nothing).status != VACUOUS
    # a leak from a useless model is still a breach
    assert evaluate_cell(config, "dp-sgd", "likelihood", _auc(0.95, 3.3, 3.2)).status == BREACH


def test_the_multiplicity_correction_widens_the_interval_with_more_attacks() -> None:
    config = _text_claimed()
    f1s = [0.1, 0.2]  # two seeds: nothing held out, so the maximum pays for every run
    one = evaluate_cell(config, "secagg", "text", _text(f1s, attacks=1))
    five = evaluate_cell(config, "secagg", "text", _text(f1s, attacks=5))
    assert (one.comparisons, five.comparisons) == (1, 5)
    assert one.ci_low is not None and one.ci_high is not None
    assert five.ci_low is not None and five.ci_high is not None
    assert five.ci_low < one.ci_low and five.ci_high > one.ci_high
    assert corrected_level(4) == 1 - 0.05 / 4
    low, high = t_interval([1.0, 2.0, 3.0], 0.95)
    assert np.isclose(low, 2 - 4.302653 / np.sqrt(3)) and np.isclose(high, 2 + 4.302653 / 3**0.5)


def test_report_json_carries_each_cells_verdict_interval_seeds_and_control(
    tmp_path: Path,
) -> None:
    config = AuditConfig(
        protections=("none", "secagg"), attacks=("text", "inversion"), claims=TEXT_CLAIMED
    )
    figure = tmp_path / "figures" / "grid.png"
    figure.parent.mkdir()
    save_grid(figure, [torch.rand(1, 3, 32, 32)] * 2)
    image = [
        JobResult(
            [
                LeakRecord("lenet", "none", 1, "psnr", 30.0, 10.0, 0.1, {"figure": "grid.png"}),
                LeakRecord("lenet", "none", 1, "ssim", 0.9, 0.1, 0.1, {}),
            ],
            1.0,
        )
    ] * 3
    jobs = {"text": _text([1.0, 1.0, 1.0]), "inversion": image}
    cells = evaluate_cells(
        config, [(p, a, jobs[a.value]) for p in config.protections for a in config.attacks]
    )
    report = build_report(config, cells, 1.0, 16)
    write_report(report, tmp_path / "report.json")
    loaded = json.loads((tmp_path / "report.json").read_text())
    assert loaded["schema"] == "fedveil.audit/2"
    by = {(c["protection"], c["attack"]): c for c in loaded["cells"]}
    cell = by["secagg", "text"]
    assert cell["verdict"] == "breach" and cell["seeds"] == 3
    assert cell["ci_low"] == cell["ci_high"] == 1.0 and cell["positive_control"] is True
    assert by["none", "text"]["verdict"] == "leaks" and by["none", "text"]["ci_low"] == 1.0
    assert loaded["breaches"] and loaded["passed"] is False
    # a figure path relative to the audit directory's figures folder is still found
    moved = dataclasses.replace(cells[1].details, figures=["elsewhere/grid.png"])
    cells[1].details = moved
    html = render_html(build_report(config, cells, 1.0, 16), tmp_path)
    assert "data:image/png;base64," in html and "No gradient inversion ran" not in html


def test_notes_list_inconclusive_and_vacuous_cells() -> None:
    config = _text_claimed()
    cells = [
        evaluate_cell(config, "dp-sgd", "likelihood", _auc(0.55, heldout=3.2, base=3.2)),
        evaluate_cell(config, "secagg", "text", _text([0.0, 0.15, 0.05])),
    ]
    notes = build_report(config, cells, 1.0, 16).notes()
    assert notes[0].startswith("VACUOUS dp-sgd/likelihood: the released model did not learn")
    assert notes[1].startswith("INCONCLUSIVE secagg/text: token_f1")


def test_with_held_out_seeds_the_run_is_selected_on_the_first_and_judged_on_the_rest() -> None:
    config = _text_claimed()
    f1s = [0.9, 0.6, 0.62, 0.58]  # the first seed selects; 0.6, 0.62, 0.58 judge
    five = evaluate_cell(config, "secagg", "text", _text(f1s, attacks=5))
    assert five.comparisons == 1  # one judged metric, not five runs
    low, high = t_interval([0.6, 0.62, 0.58], corrected_level(1))  # baseline 0
    (check,) = [c for c in five.checks if c.metric == "token_f1_over_baseline"]
    assert np.isclose(check.ci_low, low) and np.isclose(check.ci_high, high)
