"""The deployment demo's files and commands, without running any process.

Why: the deployment is only repeatable by hand if what it writes is what the real
commands read. So the party.toml files are loaded with `fedveil train`'s own loader, every
command line is parsed by the real CLI parser, commands.sh is checked by `sh -n`, and the
table is built from metrics files laid out as the parties write them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
from pathlib import Path

import pytest

from fedveil import cli
from fedveil.cli import main
from fedveil.commands.party_settings import load_party_settings
from fedveil.demo.deployment import Deployment
from fedveil.demo.deployment_files import party_toml
from fedveil.demo.deployment_report import party_figures
from fedveil.demo.deployment_script import script_text
from fedveil.demo.deployment_setup import MARKER, fresh_workdir
from fedveil.demo.options import DemoOptions
from fedveil.demo.report import DeploymentFacts
from fedveil.demo.table import format_table
from fedveil.errors import ConfigError
from fedveil.learner.federated_local import CaptionerRecipe
from fedveil.secagg.modes import AggregationMode

DOMAINS = ("energy", "residential", "urban")
TARGETS = ["c_attn", "c_fc", "lm_head"]
PLAN: dict[str, object] = {
    "name": "fedveil-demo",
    "dimension": 1234,
    "base_model_hash": "ab" * 32,
    "rounds": 5,
    "lora": {"rank": 8, "alpha": 16.0, "target_modules": TARGETS, "variant": "ffa", "seed": 0},
}


def _deployment(root: Path, mode: AggregationMode = AggregationMode.SECAGG) -> Deployment:
    return Deployment(
        workdir=root,
        model_dir=root / "model",
        domains=DOMAINS,
        rounds=5,
        mode=mode,
        recipe=DemoOptions(rounds=5).recipe(),
        program=("/opt/venv/bin/fedveil",),
    )


def _write_party_files(d: Deployment, port: int = 5555) -> list[Path]:
    paths = []
    for name in d.parties:
        path = d.workdir / d.party_toml(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(party_toml(d, name, port, PLAN, "cd" * 32))
        paths.append(path)
    return paths


def test_the_party_files_load_with_the_recipe_and_the_plans_adapter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = _deployment(tmp_path)
    monkeypatch.chdir(tmp_path)  # paths in party.toml are relative to the work folder
    recipe = CaptionerRecipe(rounds=5)
    for name, path in zip(DOMAINS, _write_party_files(d), strict=True):
        settings = load_party_settings(path, {})
        party = settings.party
        assert (party.server, party.rounds, party.min_cohort) == ("localhost:5555", 5, 3)
        assert party.credentials == Path("parties") / name / "keys"
        assert party.out == Path("parties") / name / "out"
        assert party.roster_fingerprint() == bytes.fromhex("cd" * 32)
        assert party.allow_mode == ()
        assert settings.data.city_domain == name
        assert settings.data.city_samples == recipe.data.samples_per_party
        assert settings.data.city_seed == recipe.data.seed
        assert settings.lora is not None
        assert settings.lora.target_modules == tuple(TARGETS) and settings.lora.rank == 8
        assert settings.recipe.batch_size == recipe.train.batch_size
        assert settings.recipe.learning_rate == recipe.train.learning_rate
        assert settings.recipe.epochs == recipe.train.epochs
        assert settings.recipe.max_grad_norm == recipe.train.max_grad_norm
        assert settings.recipe.seed == recipe.train.seed
        assert settings.eval is not None and settings.eval.city_test_samples == 90


def test_a_ckks_party_allows_the_mode(tmp_path: Path) -> None:
    d = _deployment(tmp_path, AggregationMode.CKKS)
    settings = load_party_settings(_write_party_files(d)[0], {})
    assert settings.party.allow_mode == ("ckks",)
    assert AggregationMode.CKKS in settings.party.policy().allowed_modes


def test_every_command_is_the_real_cli(tmp_path: Path) -> None:
    d = _deployment(tmp_path)
    parser = cli.build_parser()

    def parse(argv: tuple[str, ...]) -> argparse.Namespace:
        assert argv[: len(d.program)] == d.program
        return parser.parse_args(list(argv[len(d.program) :]))

    init = parse(d.keys_init())
    assert (init.keys_command, init.hosts) == ("init", ["localhost", "127.0.0.1"])
    for name in DOMAINS:
        request = parse(d.keys_request(name))
        assert request.client_id == name
        assert request.dir == d.keys_dir(name)
        enrol = parse(d.keys_enrol(name))
        assert enrol.request == d.keys_dir(name) / "request.json"
        train = parse(d.train(name))
        assert train.config == d.party_toml(name) and not train.alone
        alone = parse(d.train_alone(name))
        assert alone.alone and alone.out == d.alone_dir(name)
    plan = parse(d.plan())
    assert (plan.rounds, plan.mode, plan.rank, plan.variant) == (5, "secagg", 8, "ffa")
    server = parse(d.server(5555))
    assert (server.port, server.min_cohort, server.bits) == (5555, 3, 48)
    assert server.config == d.plan_file


def test_the_script_repeats_every_step_and_is_valid_sh(tmp_path: Path) -> None:
    d = _deployment(tmp_path)
    text = script_text(d, 5555, PLAN)
    path = tmp_path / "commands.sh"
    path.write_text(text)
    subprocess.run(["sh", "-n", str(path)], check=True)
    assert 'FEDVEIL="${FEDVEIL:-/opt/venv/bin/fedveil}"' in text
    for name in DOMAINS:
        assert '"$FEDVEIL" ' + " ".join(d.train(name)[1:]) + f" > parties/{name}/train.log" in text
        assert f"cat > parties/{name}/party.toml <<EOF" in text
    assert '"$FEDVEIL" ' + " ".join(d.server(5555)[1:]) in text
    assert 'roster_sha256 = "$ROSTER_SHA256"' in text
    assert text.index("keys init") < text.index("keys request") < text.index(" plan ")
    assert text.index(" server ") < text.index("train --config") < text.index("--alone")


def test_only_a_folder_of_an_earlier_demo_is_replaced(tmp_path: Path) -> None:
    work = fresh_workdir(tmp_path / "work")
    (work / "stale.txt").write_text("from the last run")
    assert fresh_workdir(work) == work and not (work / "stale.txt").exists()
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="not made by `fedveil demo`"):
        fresh_workdir(other)
    assert (other / "notes.txt").read_text() == "keep" and not (other / MARKER).exists()


@pytest.mark.parametrize(
    ("flags", "said"), [(["--dp", "client"], "--dp client"), (["--mode", "plaintext"], "plaintext")]
)
def test_what_only_runs_in_process_is_refused_in_one_line(
    tmp_path: Path, flags: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--workdir", str(tmp_path / "w"), *flags]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and said in lines[0] and "--in-process" in lines[0]
    assert not (tmp_path / "w").exists(), "refused before anything is made"


# --- the table from the parties' files ------------------------------------------------------


def _record(round_number: int, recall: float, **extra: object) -> str:
    by_domain = {"energy": recall, "residential": recall / 2, "urban": 0.0}
    record = {
        "round": round_number,
        "data": "captions",
        "examples": 90,
        "recall_by_domain": by_domain,
        "precision_by_domain": by_domain,
        "mean_recall": recall / 2,
        "bleu": 10 * recall,
        **extra,
    }
    return json.dumps(record) + "\n"


def _lay_out_metrics(d: Deployment, final: float = 0.8) -> None:
    for i, name in enumerate(d.parties):
        out = d.workdir / d.out_dir(name)
        out.mkdir(parents=True)
        lines = [_record(0, 0.0)] + [_record(n, final * n / 5, service_round=n) for n in (1, 5)]
        (out / "metrics.jsonl").write_text("".join(lines))
        alone = d.workdir / d.alone_dir(name)
        alone.mkdir(parents=True)
        text = _record(0, 0.0, alone=True) + _record(5, 0.1 * (i + 1), alone=True)
        (alone / "metrics.jsonl").write_text(text)
        (d.workdir / d.train_log(name)).write_text(
            "".join(
                f"INFO fedveil.train: {name} round {n}/5: aggregate applied: 3 survivors, "
                f"total weight 720, |mean delta| 4.1, error bound 3.8e-11\n"
                for n in (1, 5)
            )
        )


def test_the_table_comes_from_the_parties_metrics(tmp_path: Path) -> None:
    d = _deployment(tmp_path)
    _lay_out_metrics(d)
    figures = party_figures(d)
    assert figures.base.mean_recall == 0.0
    assert figures.federated.mean_recall == pytest.approx(0.4)
    assert [row.alone.mean_recall for row in figures.parties] == pytest.approx([0.05, 0.1, 0.15])
    assert figures.max_difference == 0.0
    assert [(r.round_id, r.total_weight, r.error_bound) for r in figures.service_rounds] == [
        (1, 720, 3.8e-11),
        (5, 720, 3.8e-11),
    ]
    assert figures.service_rounds[0].survivors == DOMAINS


def test_parties_that_disagree_are_reported_and_an_unfinished_run_is_named(
    tmp_path: Path,
) -> None:
    d = _deployment(tmp_path)
    _lay_out_metrics(d)
    urban = d.workdir / d.out_dir("urban") / "metrics.jsonl"
    urban.write_text(urban.read_text() + _record(5, 0.7))  # a resumed round: the last wins
    assert party_figures(d).max_difference == pytest.approx(1.0)  # BLEU 8 against 7
    urban.write_text(_record(0, 0.0) + _record(1, 0.1))
    with pytest.raises(ConfigError, match="no line for round 5 .*last: 1"):
        party_figures(d)


def test_a_deployment_report_says_so_in_json_and_table() -> None:
    from tests.demo.test_demo import _report

    facts = DeploymentFacts(Path("fedveil-demo"), 4, 12.0, 300.0, 250.0, 0.0)
    report = dataclasses.replace(_report(), deployment=facts)
    saved = json.loads(report.json_text())
    assert saved["deployment"] is True and saved["federated_seconds"] == 300.0
    assert saved["party_max_difference"] == 0.0 and saved["processes"] == 4
    assert "deployment on loopback in fedveil-demo: 4 processes" in format_table(report)
    assert "deployment" not in json.loads(_report().json_text())
