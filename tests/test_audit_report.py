"""Judging cells, the gate's breach lines, report.json's schema and report.html in a real
headless Chromium (Debian's chromium package; the render test skips without it)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fedveil.attacks.audit.config import load_config
from fedveil.attacks.audit.evaluate import BREACH, CLEAN, LEAKS, PASS, breach_lines, evaluate_cell
from fedveil.attacks.audit.html import write_html
from fedveil.attacks.audit.report import SCHEMA, build_report, write_report
from fedveil.attacks.audit.store import JobStore, fingerprint
from fedveil.attacks.update.metrics import save_grid


def _image_records(psnr: float, figure: str | None = None) -> list[dict[str, Any]]:
    rows = [
        {"target": "lenet-32", "metric": "psnr", "value": psnr, "baseline_value": 11.0},
        {"target": "lenet-32", "metric": "ssim", "value": 0.1, "baseline_value": 0.05},
    ]
    if figure:
        rows[0]["figure"] = figure
    return rows


def _mia_records(auc: float, eps: float | str, lower: float) -> list[dict[str, Any]]:
    fpr = list(np.geomspace(1e-3, 1, 20))
    rows = []
    for family, attack in (("likelihood", "loss"), ("generation", "samia_rouge_l")):
        rows.append(
            {
                "attack": attack,
                "attack_family": family,
                "auc": auc,
                "auc_low": auc - 0.1,
                "auc_high": min(1.0, auc + 0.1),
                "tpr_at_1pct_fpr": 0.5 if auc > 0.8 else 0.01,
                "tpr_at_0.1pct_fpr": 0.2 if auc > 0.8 else 0.0,
                "epsilon_claimed": eps,
                "epsilon_lower_bound": lower,
                "extraction_rate": 0.7 if auc > 0.8 else 0.0,
                "extraction_rate_filtered": 0.0,
                "filter_fpr": 0.02,
                "roc": {"fpr": fpr, "tpr": [min(1.0, f**0.3) for f in fpr]},
                "details": {"filters": {"all": {"extraction_rate_after": 0.0, "benign_fpr": 0.02}}},
            }
        )
    return rows


def test_claimed_cells_pass_or_breach_and_unclaimed_cells_only_report() -> None:
    config = load_config(None)
    leaky = {"records": _image_records(35.0), "seconds": 1.0}
    quiet = {"records": _image_records(12.0), "seconds": 1.0}
    assert evaluate_cell(config, "none", "gradient_inversion", leaky).status == LEAKS
    assert evaluate_cell(config, "none", "gradient_inversion", quiet).status == CLEAN
    breached = evaluate_cell(config, "secagg", "gradient_inversion", leaky)
    assert breached.status == BREACH
    assert evaluate_cell(config, "secagg", "gradient_inversion", quiet).status == PASS
    (line,) = breach_lines([breached])
    expected = "BREACH secagg/gradient_inversion: psnr_over_baseline = 24 exceeds the threshold 3"
    assert line == expected


def test_membership_cells_check_auc_tpr_and_the_empirical_epsilon() -> None:
    config = load_config(None)
    dp_ok = {"records": _mia_records(0.55, 4.0, 0.3), "seconds": 2.0}
    dp_broken = {"records": _mia_records(0.55, 0.5, 1.2), "seconds": 2.0}
    cell = evaluate_cell(config, "dp-sgd", "likelihood_mia", dp_ok)
    assert cell.status == PASS and cell.metrics["auc"] == 0.55
    broken = evaluate_cell(config, "dp-sgd", "generation_mia", dp_broken)
    assert broken.status == BREACH
    assert [c.metric for c in broken.breaches()] == ["epsilon_lower_bound"]
    # secure aggregation does not claim the released model: a leak is reported, not a breach
    leaky = {"records": _mia_records(0.95, "inf", 1.5), "seconds": 2.0}
    assert evaluate_cell(config, "secagg", "likelihood_mia", leaky).status == LEAKS
    assert evaluate_cell(config, "secagg", "canary_extraction_filtered", leaky).status == PASS


def test_a_claimed_cell_without_records_is_never_a_pass() -> None:
    config = load_config(None)
    cell = evaluate_cell(config, "secagg", "text_recovery", {"records": [], "seconds": 0.0})
    assert cell.status == BREACH and "records_judged" in breach_lines([cell])[0]


def test_the_store_reuses_only_results_of_the_same_settings(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    fp = fingerprint({"quick": True}, "none__label_leak")
    store.save("none__label_leak", fp, [{"metric": "label_acc", "value": np.float64(1.0)}], 1.5)
    assert store.load("none__label_leak", fp)["records"][0]["value"] == 1.0
    assert store.load("none__label_leak", fingerprint({"quick": False}, "x")) is None
    (tmp_path / "work" / "none__label_leak.json").write_text("{torn")
    assert store.load("none__label_leak", fp) is None


def _report(tmp_path: Path) -> dict[str, Any]:
    config = load_config(None)
    figure = tmp_path / "figures" / "grid.png"
    figure.parent.mkdir(parents=True)
    rng = np.random.default_rng(0)
    import torch

    save_grid(figure, [torch.from_numpy(rng.random((2, 3, 32, 32))).float()] * 2)
    jobs = {
        "gradient_inversion": {"records": _image_records(30.0, str(figure)), "seconds": 1.0},
        "output": {"records": _mia_records(0.9, "inf", 1.4), "seconds": 3.0},
    }
    cells = []
    for protection in config.protections:
        for attack in config.attacks:
            job = jobs["output"] if "mia" in attack or "canary" in attack else jobs.get(attack)
            cells.append(evaluate_cell(config, protection, attack, job))
    return build_report(config, cells, 12.0, 16)


def test_report_json_is_versioned_strict_json(tmp_path: Path) -> None:
    report = _report(tmp_path)
    write_report(report, tmp_path / "report.json")
    loaded = json.loads((tmp_path / "report.json").read_text())
    assert loaded["schema"] == SCHEMA
    assert {"threat_model", "clients", "rounds", "lora_rank", "dp"} <= set(loaded["settings"])
    assert {"clip_norm", "noise_multiplier", "sigma", "delta"} <= set(loaded["settings"]["dp"])
    assert len(loaded["cells"]) == 5 * 7 and loaded["passed"] is False
    assert all("BREACH" in line for line in loaded["breaches"])


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
