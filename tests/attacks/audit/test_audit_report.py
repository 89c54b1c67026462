"""Judging cells, the gate's breach lines, report.json's schema and report.html in a real
headless Chromium (Debian's chromium package; the render test skips without it)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedveil.attacks.audit.config import load_config
from fedveil.attacks.audit.evaluate import (
    BREACH,
    CLEAN,
    INCONCLUSIVE,
    LEAKS,
    PASS,
    breach_lines,
    evaluate_cell,
    evaluate_cells,
)
from fedveil.attacks.audit.html import write_html
from fedveil.attacks.audit.matrix import ATTACKS
from fedveil.attacks.audit.report import SCHEMA, AuditReport, build_report, write_report
from fedveil.attacks.audit.store import JobStore, fingerprint
from fedveil.attacks.families import Kind
from fedveil.attacks.measure.records import (
    JobResult,
    LeakRecord,
    OutputDetails,
    OutputRecord,
    RecordError,
    Roc,
    record_from_json,
)
from fedveil.attacks.protections import PROTECTIONS
from fedveil.attacks.update.metrics import save_grid


def _image_records(psnr: float, figure: str | None = None) -> list[LeakRecord]:
    params = {"attack": "dlg", **({"figure": figure} if figure else {})}
    return [
        LeakRecord("lenet-32", "none", 1, "psnr", psnr, 11.0, 0.1, params),
        LeakRecord("lenet-32", "none", 1, "ssim", 0.1, 0.05, 0.1, params),
    ]


DETAILS = OutputDetails(
    n_canaries=48,
    n_members=24,
    delta=1e-5,
    mean_exposure_members=5.0,
    mean_exposure_non_members=1.0,
    exposure_log2_space=[10.0],
    heldout_loss=3.0,
    base_heldout_loss=3.2,
    train_loss=1.0,
    extraction_rate_non_members=0.0,
    filters={"all": {"extraction_rate_after": 0.0, "benign_fpr": 0.02}},
)


def _mia_records(
    auc: float, eps: float | str, lower: float, certifiable: float | None = None
) -> list[OutputRecord]:
    fpr = list(np.geomspace(1e-3, 1, 20))
    rows = []
    for family, attack in (("likelihood", "loss"), ("generation", "samia_rouge_l")):
        tpr1, tpr01 = (0.5, 0.2) if auc > 0.8 else (0.01, 0.0)
        rows.append(
            OutputRecord(
                protection="secagg",
                attack=attack,
                attack_family=family,
                auc=auc,
                auc_low=auc - 0.1,
                auc_high=min(1.0, auc + 0.1),
                tpr_at_1pct_fpr=tpr1,
                tpr_at_1pct_fpr_low=tpr1,
                tpr_at_1pct_fpr_high=tpr1,
                tpr_at_01pct_fpr=tpr01,
                tpr_at_01pct_fpr_low=tpr01,
                tpr_at_01pct_fpr_high=tpr01,
                min_fpr=1 / 24,
                epsilon_claimed=float(eps),
                epsilon_lower_bound=lower,
                epsilon_lower_bound_cp=lower,
                audit_passed=lower <= float(eps),
                extraction_rate=0.7 if auc > 0.8 else 0.0,
                extraction_rate_filtered=0.0,
                filter_fpr=0.02,
                seconds=1.0,
                train_seconds=2.0,
                roc=Roc(fpr, [min(1.0, f**0.3) for f in fpr]),
                details=DETAILS,
                epsilon_certifiable=certifiable,
            )
        )
    return rows


def test_claimed_cells_pass_or_breach_and_unclaimed_cells_only_report() -> None:
    config = load_config(None)
    # three seeds with the same values: a zero-width interval (one seed: inconclusive)
    leaky = [JobResult(_image_records(35.0), 1.0)] * 3
    quiet = [JobResult(_image_records(12.0), 1.0)] * 3
    assert evaluate_cell(config, "none", "inversion", leaky).status == LEAKS
    assert evaluate_cell(config, "none", "inversion", quiet).status == CLEAN
    breached = evaluate_cell(config, "secagg", "inversion", leaky)
    assert breached.status == BREACH
    assert evaluate_cell(config, "secagg", "inversion", quiet).status == PASS
    (line,) = breach_lines([breached])
    expected = "BREACH secagg/inversion: psnr_over_baseline = 24 exceeds the threshold 3"
    assert line == expected + " (0.975 CI 24 to 24)"
    one_seed = evaluate_cell(config, "secagg", "inversion", leaky[0])
    assert one_seed.status == INCONCLUSIVE and one_seed.seeds == 1


def test_membership_cells_check_auc_tpr_and_the_empirical_epsilon() -> None:
    config = load_config(None)
    dp_ok = JobResult(_mia_records(0.55, 4.0, 0.3), 2.0)
    dp_broken = JobResult(_mia_records(0.55, 0.5, 1.2), 2.0)
    cell = evaluate_cell(config, "dp-sgd", "likelihood", dp_ok)
    assert cell.status == PASS and cell.metrics["auc"] == 0.55
    broken = evaluate_cell(config, "dp-sgd", "generation", dp_broken)
    assert broken.status == BREACH
    assert [c.metric for c in broken.breaches()] == ["epsilon_lower_bound"]
    # secure aggregation does not claim the released model: a leak is reported, not a breach
    leaky = JobResult(_mia_records(0.95, "inf", 1.5), 2.0)
    assert evaluate_cell(config, "secagg", "likelihood", leaky).status == LEAKS
    # 0 of 24 member canaries: the Clopper-Pearson high end (~0.14) is above the 0.05
    # threshold, so too few canaries to certify a pass (was PASS on the point estimate)
    filtered = evaluate_cell(config, "secagg", "extraction_filtered", leaky)
    assert filtered.status == INCONCLUSIVE and filtered.ci_high is not None
    assert 0.1 < filtered.ci_high < 0.2


def test_a_claimed_cell_without_records_is_never_a_pass() -> None:
    config = load_config(None)
    cell = evaluate_cell(config, "secagg", "inversion", JobResult([], 0.0))
    assert cell.status == BREACH and "records_judged" in breach_lines([cell])[0]


def test_the_store_reuses_only_results_of_the_same_settings(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    fp = fingerprint({"quick": True}, "none__label_leak")
    record = LeakRecord("lenet-32", "none", 1, "label_acc", np.float64(1.0), 0.1, 0.5)
    store.save("none__label_leak", fp, JobResult([record], 1.5))
    stored = store.load("none__label_leak", fp)
    assert stored is not None and stored.result.records == [record]
    assert stored.result.seconds == 1.5
    assert store.load("none__label_leak", fingerprint({"quick": False}, "x")) is None
    (tmp_path / "work" / "none__label_leak.json").write_text("{torn")
    assert store.load("none__label_leak", fp) is None


def test_records_round_trip_through_json_and_misspelt_keys_fail_loudly() -> None:
    leak = _image_records(30.0, "grid.png")[0]
    output = _mia_records(0.9, "inf", 1.4)[0]
    for record in (leak, output):
        assert record_from_json(json.loads(json.dumps(record.to_json()))) == record
    stored = output.to_json()
    assert stored["epsilon_claimed"] == "inf" and "tpr_at_0.1pct_fpr" in stored
    assert list(leak.to_json()) == [
        "target", "protection", "n_clients", "metric", "value", "baseline_value", "seconds",
        "params",
    ]  # fmt: skip
    misspelt = {**leak.to_json(), "baseline": 11.0}
    del misspelt["baseline_value"]
    with pytest.raises(
        RecordError, match=r"unknown keys \['baseline'\].*missing keys \['baseline_value'\]"
    ):
        record_from_json(misspelt)
    with pytest.raises(RecordError, match="auc"):
        record_from_json({**output.to_json(), "auc": "high"})
    with pytest.raises(TypeError):
        LeakRecord("lenet-32", "none", 1, "psnr", 1.0, 0.0, 0.1, {}, figure="x")  # type: ignore[call-arg]


def _report(tmp_path: Path) -> AuditReport:
    config = load_config(None)
    figure = tmp_path / "figures" / "grid.png"
    figure.parent.mkdir(parents=True)
    rng = np.random.default_rng(0)
    import torch

    save_grid(figure, [torch.from_numpy(rng.random((2, 3, 32, 32))).float()] * 2)
    jobs: dict[str, list[JobResult]] = {
        "inversion": [JobResult(_image_records(30.0, str(figure)), 1.0)] * 3,
        "output": [JobResult(_mia_records(0.9, "inf", 1.4), 3.0)],
    }
    cells = evaluate_cells(
        config,
        [
            (p, a, jobs["output"] if a.kind is Kind.OUTPUT else jobs.get(a))
            for p in config.protections
            for a in config.attacks
        ],
    )
    return build_report(config, cells, 12.0, 16)


def test_report_json_is_versioned_strict_json(tmp_path: Path) -> None:
    report = _report(tmp_path)
    write_report(report, tmp_path / "report.json")
    loaded = json.loads((tmp_path / "report.json").read_text())
    assert loaded["schema"] == SCHEMA
    assert {"threat_model", "clients", "rounds", "lora_rank", "dp"} <= set(loaded["settings"])
    assert {"clip_norm", "noise_multiplier", "sigma", "delta"} <= set(loaded["settings"]["dp"])
    assert len(loaded["cells"]) == len(PROTECTIONS) * len(ATTACKS) and loaded["passed"] is False
    assert all("BREACH" in line for line in loaded["breaches"])
    for cell in loaded["cells"]:
        assert {"verdict", "ci_low", "ci_high", "seeds", "positive_control"} <= set(cell)
    assert loaded["settings"]["multiplicity"].startswith("bonferroni")


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="Debian's chromium package is not installed")
def test_report_html_renders_offline_in_headless_chromium(tmp_path: Path) -> None:
    report = _report(tmp_path)
    html = tmp_path / "report.html"
    write_html(report, html, tmp_path)
    text = html.read_text()
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in text and "data:image/png;base64," in text
    shot = tmp_path / "shot.png"
    base = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1200,1600", html.as_uri()],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.std() > 10  # not a blank page
    assert (pixels < 128).mean() > 0.005  # text and tables drawn
    dom = subprocess.run(
        [*base, "--dump-dom", html.as_uri()],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    for section in ("summary", "matrix", "epsilon", "filters", "roc", "reconstructions"):
        assert f'id="{section}"' in dom
    assert dom.count("<svg") >= 2 and "<img" in dom and "BREACH" in dom


def test_an_epsilon_check_that_cannot_fail_says_inconclusive() -> None:
    config = load_config(None)
    # 48 canaries certify at most ~1.71: a claim of 7.5 cannot be refuted here.
    beyond = evaluate_cell(
        config, "dp-sgd", "likelihood", JobResult(_mia_records(0.55, 7.5, 0.3, 1.71), 2.0)
    )
    (check,) = [c for c in beyond.checks if c.metric == "epsilon_lower_bound"]
    assert check.passed and check.inconclusive is not None
    assert "48 canaries" in check.inconclusive and "cannot refute" in check.inconclusive
    assert check.to_dict()["verdict"] == "inconclusive"
    assert beyond.metrics["epsilon_certifiable"] == 1.71
    within = evaluate_cell(
        config, "dp-sgd", "likelihood", JobResult(_mia_records(0.55, 1.0, 0.3, 1.71), 2.0)
    )
    (check,) = [c for c in within.checks if c.metric == "epsilon_lower_bound"]
    assert check.passed and check.inconclusive is None and "verdict" not in check.to_dict()
    refuted = evaluate_cell(
        config, "dp-sgd", "likelihood", JobResult(_mia_records(0.55, 1.0, 1.5, 1.71), 2.0)
    )
    assert refuted.status == BREACH
