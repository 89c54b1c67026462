"""`fedveil audit`'s text column on a team's own model, adapter and records ([target]
model + records + lora, the files `fedveil attack` reads), and the errors a wrong one gives.

Both directions at the same budget (one SGD step per client, rank-8 FFA-LoRA on c_attn,
the same attacks and per-record scoring as `fedveil attack`): with no protection each
client's delta gives its record back (token F1 far over the never-seen records'); the
SecAgg+ mean of ten clients' deltas saturates the rank, so the same metric shows no
record recovered, only the baseline's chance overlap.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedveil.attacks.audit.config import load_config
from fedveil.attacks.audit.jobs import JobContext
from fedveil.attacks.audit.store import fingerprint
from fedveil.attacks.families import Family
from fedveil.attacks.measure.observe import UpdateLeakageSettings
from fedveil.attacks.measure.user_update import user_text_records
from fedveil.attacks.targets.user_update import UpdateTargetSpec, cohort_records
from fedveil.cli import main
from fedveil.runners.aggregators import real_aggregators
from tests.helpers.tiny_gpt2 import WORDS, save_tiny_gpt2

LORA = """
[target.lora]
rank = 8
alpha = 16.0
target_modules = ["c_attn"]
variant = "ffa"
"""


def _texts(count: int, seed: int) -> list[str]:
    """`count` distinct five-word records of the tiny tokenizer's words."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < count:
        text = " ".join(str(w) for w in rng.choice(WORDS, size=5, replace=False))
        if text not in out:
            out.append(text)
    return out


def _write(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model/ (a saved two-layer GPT-2) and records.jsonl (40 records), as a team hands
    them to `fedveil attack`."""
    root = tmp_path_factory.mktemp("team")
    save_tiny_gpt2(root / "model")
    _write(root / "records.jsonl", _texts(40, seed=11))
    return root


def _run(config_dir: Path, text: str, out: Path) -> int:
    config = config_dir / "audit.toml"
    config.write_text(text)
    return main(
        ["audit", "--config", str(config), "--out", str(out), "--workers", "1", "--no-progress"]
    )


def test_the_text_cells_run_on_the_teams_model_and_records(team: Path, tmp_path: Path) -> None:
    config = f"""
[audit]
protections = ["none", "secagg"]
attacks = ["text"]
[federation]
clients = 10
[claims]
secagg = ["text"]
[target]
model = "model"
records = "records.jsonl"
{LORA}"""
    assert _run(team, config, tmp_path / "out") == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    cells = {c["protection"]: c for c in report["cells"]}
    none, secagg = cells["none"], cells["secagg"]
    print("none", none["metrics"], none["baselines"])
    print("secagg", secagg["metrics"], secagg["baselines"])
    # no protection: every client's record comes back, far over the never-seen records
    assert none["status"] == "leaks"
    assert none["metrics"]["token_f1"] - none["baselines"]["token_f1"] > 0.5
    strongest = none["details"]["strongest"]["token_f1"]
    assert strongest["target"] == "user-model" and strongest["n_clients"] == 1
    params = strongest["params"]
    assert params["recovered_records"] == 10 and params["variant"] == "ffa"
    ranked = params["records"]
    assert [r["rank"] for r in ranked] == list(range(1, 11))
    assert all(r["recovered"] and r["score"] > params["baseline_max"] for r in ranked)
    assert all(r["source"].startswith(str(team / "records.jsonl")) for r in ranked)
    # the secure mean of ten clients, judged on the same metric: no record recovered,
    # the excess over the never-seen records within the threshold
    assert secagg["status"] == "pass"
    check = next(c for c in secagg["checks"] if c["metric"] == "token_f1_over_baseline")
    assert check["value"] <= 0.2
    best = secagg["details"]["strongest"]["token_f1"]
    assert best["n_clients"] == 10 and best["params"]["recovered_records"] == 0
    assert len(best["params"]["records"]) == 10


def test_the_default_columns_are_those_the_target_answers(team: Path) -> None:
    path = team / "defaults.toml"
    path.write_text(f'[target]\nmodel = "model"\nrecords = "records.jsonl"\n{LORA}')
    config = load_config(path)
    assert Family.TEXT in config.attacks and Family.EPSILON in config.attacks
    assert Family.INVERSION not in config.attacks and Family.LABELS not in config.attacks
    assert all(f.kind.value != "output" for f in config.attacks)  # no [target] texts


def test_the_fingerprint_follows_the_records_file(team: Path, tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    (root / "model").symlink_to(team / "model")
    records = _write(root / "records.jsonl", _texts(12, seed=3))
    path = root / "audit.toml"
    path.write_text(f'[target]\nmodel = "model"\nrecords = "records.jsonl"\n{LORA}')

    def fp() -> str:
        context = JobContext.of(load_config(path), tmp_path / "out", real_aggregators)
        return fingerprint(context.settings(), "none__text_recovery")

    before = fp()
    assert fp() == before  # unchanged files: the stored jobs are reused
    _write(records, _texts(13, seed=3))
    assert fp() != before


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ('model = "model"\nrecords = "missing.jsonl"', "[target] records"),
        ('model = "gpt2"\nrecords = "records.jsonl"', "gpt2 is not a directory"),
        ('model = "model"\nrecords = "empty.jsonl"', "[target] records"),
        ('model = "model"\nrecords = "bad.jsonl"', "bad.jsonl:1: unknown key 'txt'"),
        ('records = "records.jsonl"', "[target] records needs model"),
        ('model = "model"\nrecords = "records.jsonl"\nlora = 3', "[target] lora: must be a path"),
        ('model = "model"\nrecords = "records.jsonl"\nlora = "nope.toml"', "[target] lora"),
        (
            'model = "model"\nrecords = "records.jsonl"\n[target.lora]\ntarget_modules = ["xyz"]',
            "[target] lora: the adapter",
        ),
        (
            'model = "model"\nrecords = "records.jsonl"\n[target.lora]\ntarget_modules = ["c_fc"]',
            "[target] lora: token recovery reads",
        ),
        (
            'model = "model"\nrecords = "records.jsonl"\n[target.lora]\nrnk = 4',
            "[target.lora]: unknown key 'rnk'",
        ),
        ('model = "model"\nlora = "plan.toml"', "[target] lora: the adapter is the update"),
    ],
)
def test_a_wrong_update_target_is_a_configuration_error(
    team: Path, tmp_path: Path, target: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config_dir = tmp_path / "cfg"
    config_dir.mkdir()
    for name in ("model", "records.jsonl"):
        (config_dir / name).symlink_to(team / name)
    (config_dir / "empty.jsonl").write_text("\n\n")
    (config_dir / "bad.jsonl").write_text('{"txt": "the gate"}\n')
    assert _run(config_dir, f"[target]\n{target}\n", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_column_the_target_cannot_answer_is_refused(
    team: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f'[target]\nmodel = "model"\nrecords = "records.jsonl"\n{LORA}'
    config = f'[audit]\nattacks = ["text", "inversion"]\n{target}'
    assert _run(team, config, tmp_path / "out") == 2
    assert "[audit] attacks: inversion does not apply to this [target]" in capsys.readouterr().err


def test_a_lora_file_is_read_like_fedveil_attacks_and_fingerprinted(
    team: Path, tmp_path: Path
) -> None:
    root = tmp_path / "t"
    root.mkdir()
    for name in ("model", "records.jsonl"):
        (root / name).symlink_to(team / name)
    adapter = root / "adapter.toml"
    adapter.write_text(LORA.replace("[target.lora]", "[lora]"))
    path = root / "audit.toml"
    path.write_text('[target]\nmodel = "model"\nrecords = "records.jsonl"\nlora = "adapter.toml"\n')
    config = load_config(path)
    assert config.update_target is not None and config.update_target.lora == adapter
    before = JobContext.of(config, tmp_path / "out", real_aggregators).settings()
    adapter.write_text(LORA.replace("[target.lora]", "[lora]").replace("rank = 8", "rank = 4"))
    after = JobContext.of(load_config(path), tmp_path / "out", real_aggregators).settings()
    assert before["update_target"] != after["update_target"]


@pytest.mark.parametrize("protection", ["ckks", "secagg+client-dp"])
def test_the_other_aggregate_rows_see_the_real_rounds_mean(team: Path, protection: str) -> None:
    """CKKS's decoded mean and the SecAgg+ round with client-level DP noise: the same
    cohort, the same scoring; the DP row states its noise next to the metric."""
    spec = UpdateTargetSpec.of(
        team / "model",
        team / "records.jsonl",
        {"rank": 8, "alpha": 16.0, "target_modules": ["c_attn"], "variant": "ffa"},
    )
    settings = UpdateLeakageSettings(quick=True, n_clients=10, seed=1)
    rows = user_text_records(protection, settings, real_aggregators(), spec)
    f1 = [r for r in rows if r.metric == "token_f1"]
    assert f1 and all(r.n_clients == 10 for r in f1)
    for r in f1:
        print(protection, r.attack, r.value, r.baseline_value, r.params.get("snr"))
        assert r.params["recovered_records"] == 0
        assert r.value - r.baseline_value <= 0.2
    if protection == "secagg+client-dp":
        assert {"sigma", "clip_norm", "snr", "epsilon"} <= set(f1[0].params)


def test_each_seed_draws_the_next_records_and_wraps_a_short_file() -> None:
    assert cohort_records(list(range(40)), 10, 1) == list(range(10, 20))
    assert cohort_records(list(range(4)), 6, 0) == [0, 1, 2, 3, 0, 1]
