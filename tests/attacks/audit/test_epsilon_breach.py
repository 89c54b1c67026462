"""End-to-end breach tests of the `epsilon` column (issue 17): a DP run with the noise
switched off but the claim kept makes `fedveil audit` exit 1 with its BREACH line; with the
real noise the same audit passes. The broken mechanism is the real one with its noise draw
replaced by zeros (monkeypatched in this process: --workers 1 runs the jobs here).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fedveil.cli import main
from fedveil.learner import dp_randomness
from fedveil.secagg.dp import stages as dp_stages


def _audit(tmp_path: Path, protection: str) -> int:
    config = tmp_path / "audit.toml"
    config.write_text(f'[audit]\nprotections = ["{protection}"]\nattacks = ["epsilon"]\n')
    out = tmp_path / "out"
    return main(
        ["audit", "--config", str(config), "--out", str(out), "--workers", "1", "--no-progress"]
    )


def _cell(tmp_path: Path) -> dict[str, object]:
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    (cell,) = report["cells"]
    return cell


def test_dp_sgd_with_the_noise_off_and_the_claim_kept_breaches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_noise(std: float, reference: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(reference)

    monkeypatch.setattr(dp_randomness, "gaussian_noise", no_noise)
    assert _audit(tmp_path, "dp-sgd") == 1
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("BREACH")]
    assert lines and lines[0].startswith("BREACH dp-sgd/epsilon: epsilon_lower_bound = ")
    cell = _cell(tmp_path)
    metrics = cell["metrics"]
    assert isinstance(metrics, dict)
    assert metrics["epsilon_lower_bound"] > metrics["epsilon_claimed"]


def test_dp_sgd_with_the_real_noise_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _audit(tmp_path, "dp-sgd") == 0
    cell = _cell(tmp_path)
    metrics = cell["metrics"]
    assert isinstance(metrics, dict)
    # a pass that means something: the audit could have refuted the claim
    assert cell["verdict"] == "pass"
    assert (
        metrics["epsilon_certifiable"] > metrics["epsilon_claimed"] > metrics["epsilon_lower_bound"]
    )
    assert "BREACH" not in capsys.readouterr().out


def test_client_dp_with_the_noise_off_and_the_claim_kept_breaches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_noise(variance: float, count: int, rng: object) -> np.ndarray:
        return np.zeros(count, dtype=np.int64)

    monkeypatch.setattr(dp_stages, "sample_discrete_gaussian", no_noise)
    assert _audit(tmp_path, "secagg+client-dp") == 1
    out = capsys.readouterr().out
    assert "BREACH secagg+client-dp/epsilon: epsilon_lower_bound = " in out


@pytest.mark.slow
def test_client_dp_with_tiny_noise_breaches_on_membership(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The third breach test: client DP whose noise is too small for the row's claims.
    [dp.output] sets the released model's noise (the one source the output rows run with);
    at C = 10 (no clipping) and z = 0.001 the federation memorises party 0's canaries, the
    model still learns (not vacuous), and the likelihood attack crosses the claimed cell's
    threshold."""
    config = tmp_path / "audit.toml"
    config.write_text(
        '[audit]\nprotections = ["none", "secagg+client-dp"]\nattacks = ["likelihood"]\n\n'
        # a clip that does not bind and noise far too small: the federation trains as if
        # unprotected, while the row still claims the membership cells
        "[dp.output]\nclient_clip_norm = 10.0\nclient_noise_multiplier = 0.001\n"
    )
    out = tmp_path / "out"
    argv = ["audit", "--config", str(config), "--out", str(out), "--workers", "1"]
    assert main([*argv, "--no-progress"]) == 1
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("BREACH")]
    assert any(ln.startswith("BREACH secagg+client-dp/likelihood: ") for ln in lines), lines
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["dp"]["output"]["client_noise_multiplier"] == 0.001
