"""`fedveil contributions`: the table of scores with each organisation's epsilon, on the
tiny captioner; bad values exit 2 with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedveil.cli import main
from tests.helpers.captioner_fixtures import tiny_base_dir

SMALL = ["--samples-per-party", "8", "--validation", "2", "--rounds", "1", "--offices", "2"]


def test_prints_scores_and_the_epsilon_each_organisation_spent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scores.json"
    argv = ["contributions", "--model", str(tiny_base_dir()), *SMALL, "--epsilon", "4"]
    assert main([*argv, "--json", str(out)]) == 0
    table = capsys.readouterr().out
    report = json.loads(out.read_text())
    orgs = ["energy", "energy-dup", "residential-half", "urban-noisy"]
    assert list(report["scores"]) == orgs
    for org in orgs:
        assert org in table
        assert 2.0 < report["epsilon_spent"][org] <= 4.0 * 1.01  # one release, budget 4
        assert f"{report['epsilon_spent'][org]:.2f}" in table
    assert report["releases_per_client"] == 1 and "truth" not in report
    assert "Spearman" not in table


def test_the_cumulative_design_charges_one_release_per_client(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scores.json"
    argv = ["contributions", "--model", str(tiny_base_dir()), *SMALL, "--rounds", "2"]
    assert main([*argv, "--design", "cumulative", "--epsilon", "4", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["design"] == "cumulative" and report["clip"] == 10.0
    assert report["releases_per_client"] == 1 and report["rounds"] == 2
    for org in report["scores"]:  # one release at the end, whatever the rounds
        assert 2.0 < report["epsilon_spent"][org] <= 4.0 * 1.01
    assert "cumulative design" in table and "one release per client in all" in table


@pytest.mark.slow
def test_truth_adds_exact_shapley_and_spearman(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scores.json"
    argv = ["contributions", "--model", str(tiny_base_dir()), *SMALL, "--truth"]
    assert main([*argv, "--json", str(out)]) == 0
    table = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert set(report["truth"]) == set(report["scores"])
    assert report["truth"]["energy"] == pytest.approx(report["truth"]["energy-dup"], abs=1e-9)
    assert -1.0 <= report["spearman"] <= 1.0
    assert "Spearman vs exact Shapley" in table and "exact Shapley" in table


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--epsilon", "0"], "--epsilon"),
        (["--epsilon", "nan"], "--epsilon"),
        (["--delta", "1"], "--delta"),
        (["--clip", "-1"], "--clip"),
        (["--design", "cumulative", "--clip", "0"], "--clip"),
        (["--rounds", "0"], "--rounds"),
        (["--offices", "1"], "--offices"),
        (["--duplicate", "urban"], "three different domains"),
        (["--samples-per-party", "2", "--offices", "3"], "too small"),
    ],
)
def test_bad_values_exit_2_with_one_line(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["contributions", "--model", str(tiny_base_dir()), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
