"""`fedveil audit` on a user's own model directory and JSONL texts (the output attacks),
and the configuration errors a wrong [target] gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedveil.attacks.output.canaries import CanaryConfig
from fedveil.attacks.targets.canary_lm import CanaryLMConfig, build_scenario
from fedveil.attacks.targets.tiny_lm import sentences
from fedveil.attacks.targets.user_lm import write_jsonl
from fedveil.cli import main


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with model/ (a small GPT-2 saved by save_pretrained, offline) and
    texts.jsonl (city sentences), as a user would hand them to the audit."""
    root = tmp_path_factory.mktemp("user")
    pretrained = build_scenario(
        CanaryLMConfig(
            canaries=CanaryConfig(n_canaries=8), n_public=300, n_private=8, base_epochs=8
        )
    )
    pretrained.base.save_pretrained(root / "model")
    pretrained.tokenizer.save_pretrained(root / "model")
    write_jsonl(root / "texts.jsonl", sentences(120, seed=321))
    return root


def _run(config_dir: Path, text: str, out: Path) -> int:
    config = config_dir / "audit.toml"
    config.write_text(text)
    return main(
        ["audit", "--config", str(config), "--out", str(out), "--workers", "1", "--no-progress"]
    )


def test_the_audit_probes_a_users_model_and_texts(user_dir: Path, tmp_path: Path) -> None:
    config = """
[audit]
protections = ["secagg"]
attacks = ["likelihood", "extraction", "extraction_filtered"]
[federation]
rounds = 10
[target]
model = "model"
texts = "texts.jsonl"
canaries = 32
"""
    assert _run(user_dir, config, tmp_path / "out") == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    cells = {c["attack"]: c for c in report["cells"]}
    details = cells["likelihood"]["details"]["federation"]
    assert details["canaries"] == 32 and details["rounds"] == 10
    # secure aggregation does not protect what the released model memorised: it shows
    assert cells["likelihood"]["status"] in ("leaks", "no leak measured")
    assert cells["likelihood"]["metrics"]["auc"] > 0.6
    # Nothing extracted through the filters, but 0 of 16 member canaries cannot certify a
    # rate under 5%, and without a `none` row there is no positive control: inconclusive.
    assert cells["extraction_filtered"]["verdict"] == "inconclusive"
    assert cells["extraction_filtered"]["metrics"]["extraction_rate_filtered"] == 0.0


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ('model = "nowhere"\ntexts = "texts.jsonl"', "is not a directory"),
        ('model = "model"', "needs both model"),
        ('model = "model"\ntexts = "missing.jsonl"', "is not a file"),
        ('model = "model"\ntexts = "texts.jsonl"\ncanaries = 1', "[target] canaries: must be >= 2"),
        ('model = 3\ntexts = "texts.jsonl"', "must be a path string"),
    ],
)
def test_a_wrong_target_is_a_configuration_error(
    user_dir: Path, tmp_path: Path, target: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config_dir = tmp_path / "cfg"
    config_dir.mkdir()
    for name in ("model", "texts.jsonl"):
        (config_dir / name).symlink_to(user_dir / name)
    assert _run(config_dir, f"[target]\n{target}\n", tmp_path / "out") == 2
    assert message in capsys.readouterr().err
