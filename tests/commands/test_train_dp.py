"""`fedveil train` with a [dp] table: DP-SGD ("sample") or a client-level DP budget
("client"), each kept in a privacy ledger file that survives restarts.

The parties are the tiny GPT-2 + JSONL texts of test_train_command, run through the real
entry point against a real in-process server over mutual TLS. What matters most is that
the budget cannot be reset by restarting: a party whose checkpoint is deleted still finds
its spend in the ledger and refuses the round, and a party whose ledger is deleted under
its checkpoint refuses to resume.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from fedveil.cli import main
from fedveil.clients.credentials import ClientCredentials
from fedveil.clients.privacy_ledger import PersistentPrivacyLedger, federation_fingerprint
from fedveil.learner.federation.checkpoint import CHECKPOINT_FILE
from fedveil.secagg.dp import GaussianEvent, PrivacyBudget
from fedveil.server.keys_store import client_dir
from tests.commands.test_train_command import (
    _adapter,
    _federation_plan,
    _one_error_line,
    _party_toml,
    _texts,
)
from tests.helpers.service_harness import make_keys, running_server, settings_for
from tests.helpers.tiny_gpt2 import save_tiny_gpt2

Phase = Callable[[int], list[Path]]
"""One step of a test: the party.toml files to run at once, given the server's port."""

SAMPLE_DP = '\n[dp]\nkind = "sample"\nepsilon = 8.0\n'
ONE_ROUND_DP = '\n[dp]\nkind = "sample"\nepsilon = 2.3\nnoise_multiplier = 2.0\n'
"""z = 2 on these parties costs epsilon 1.84 / 2.00 for one round (3 or 4 records: two
Poisson steps at rate 1/2; 2 records: one step at rate 1), 2.53 / 2.95 for two: a budget
of 2.3 covers round 1 and refuses round 2 for all three."""
CLIENT_DP = '\n[dp]\nkind = "client"\nepsilon = 50.0\n'


@pytest.fixture
def federation(tmp_path: Path) -> tuple[Path, Path, list[str], list[Path], int, bytes]:
    """test_train_command's federation: the saved tiny GPT-2, three enrolled parties and
    their texts, the server's dimension and base model hash."""
    model_dir = save_tiny_gpt2(tmp_path / "gpt2-tiny")
    keys, ids = make_keys(tmp_path, 3)
    texts = [_texts(tmp_path, i) for i in range(3)]
    dimension, base = _federation_plan(model_dir)
    return model_dir, keys, ids, texts, dimension, base


def _federate(
    tmp_path: Path, federation: tuple, phases: list[Phase], **server: object
) -> list[list[int]]:
    """Each phase's parties at once (`fedveil train`), against one running server."""
    _, keys, _, _, dimension, base = federation
    settings = settings_for(
        tmp_path, keys, dimension=dimension, model_hash=base, stage_timeout_s=20.0, **server
    )

    async def federate() -> list[list[int]]:
        codes = []
        async with running_server(settings) as running:
            for phase in phases:
                configs = phase(running.port)
                runs = [asyncio.to_thread(main, ["train", "--config", str(c)]) for c in configs]
                codes.append(list(await asyncio.gather(*runs)))
        return codes

    return asyncio.run(federate())


def _parties(
    tmp_path: Path, federation: tuple, rounds: int, dp: str, only: tuple[str, ...] = ()
) -> Phase:
    model_dir, keys, ids, texts, _, _ = federation

    def phase(port: int) -> list[Path]:
        return [
            _party_toml(tmp_path, keys, cid, model_dir, texts[i], port, rounds, dp)
            for i, cid in enumerate(ids)
            if not only or cid in only
        ]

    return phase


def _out(tmp_path: Path, cid: str) -> Path:
    return tmp_path / "out" / cid


def _ledger_path(tmp_path: Path, cid: str) -> Path:
    """The default ledger: in the party's credentials folder, not in its out folder."""
    return client_dir(tmp_path / "keys", cid) / "privacy-ledger.json"


def _ledger_file(tmp_path: Path, cid: str) -> dict:
    return json.loads((_ledger_path(tmp_path, cid)).read_text())


def _ledger(tmp_path: Path, keys: Path, cid: str, budget: PrivacyBudget) -> PersistentPrivacyLedger:
    """The party's ledger file, opened as the party opens it (recomputing the epsilon)."""
    ca_pem = ClientCredentials.load(client_dir(keys, cid)).ca_pem
    return PersistentPrivacyLedger.open(
        _ledger_path(tmp_path, cid),
        budget,
        federation=federation_fingerprint(ca_pem),
        owner=cid,
    )


def _metrics(tmp_path: Path, cid: str) -> list[dict]:
    lines = (_out(tmp_path, cid) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _checkpoint_metadata(tmp_path: Path, cid: str) -> dict[str, str]:
    with safe_open(str(_out(tmp_path, cid) / CHECKPOINT_FILE), framework="np") as f:
        return dict(f.metadata())


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert all(line.startswith("error: ") for line in lines), err
    return lines


# --- (a) sample-level DP: the ledger, the log and the metrics agree --------------------------


def test_sample_dp_parties_spend_within_the_budget_and_record_it(
    tmp_path: Path, federation: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="fedveil.train")
    assert _federate(tmp_path, federation, [_parties(tmp_path, federation, 2, SAMPLE_DP)]) == [
        [0, 0, 0]
    ]
    _, keys, ids, _, _, _ = federation
    adapters = [_adapter(tmp_path, cid) for cid in ids]
    for other in adapters[1:]:  # DP-SGD noise is local: the aggregate is still shared
        assert all(np.array_equal(other[k], adapters[0][k]) for k in other)
    for cid in ids:
        stored = _ledger_file(tmp_path, cid)
        assert stored["owner"] == cid and stored["budget"] == {"epsilon": 8.0, "delta": 1e-5}
        assert len(stored["rounds"]) == 2 and stored["accountant"] == "prv"
        events = [e for r in stored["rounds"] for e in r["events"]]
        assert all(e["mechanism"] == "gaussian" for e in events)
        with _ledger(tmp_path, keys, cid, PrivacyBudget(8.0, 1e-5)) as ledger:
            spent = ledger.spent_epsilon
        first, second = (r["epsilon_after"] for r in stored["rounds"])
        assert 0 < first < second == pytest.approx(spent, rel=1e-9)
        assert 7.0 < spent <= 8.0, "calibrated for the run's 2 rounds, not wasted"
        records = _metrics(tmp_path, cid)
        assert [r["round"] for r in records] == [1, 2]
        assert [r["privacy"]["epsilon"] for r in records] == pytest.approx([first, second])
        privacy = records[-1]["privacy"]
        assert privacy["kind"] == "sample" and privacy["rounds_charged"] == 2
        assert privacy["ledger"] == str(_ledger_path(tmp_path, cid))
        assert json.loads(_checkpoint_metadata(tmp_path, cid)["metrics"]) == records[-1]
        logged = [m for m in _logged(caplog, "privacy spent: epsilon") if m.startswith(cid)]
        assert [float(re.search(r"epsilon (\S+) of", m)[1]) for m in logged] == pytest.approx(  # type: ignore[index]
            [first, second], rel=1e-3
        )


# --- (b) the budget: refused before training, and not reset by a restart ----------------------


def test_a_round_past_the_budget_is_refused_and_a_restart_does_not_reset_it(
    tmp_path: Path,
    federation: tuple,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level("INFO", logger="fedveil.train")
    _, keys, ids, _, _, _ = federation
    budget = PrivacyBudget(2.3, 1e-5)
    spent: dict[str, float] = {}

    def forget_the_run(port: int) -> list[Path]:
        """The attack: delete org-00's checkpoint, adapter and metrics (keep its ledger),
        and org-01's ledger (keep its checkpoint); then run both again."""
        codes_so_far = capsys.readouterr().err
        lines = _error_lines(codes_so_far)
        assert len(lines) == 3, "each party refuses round 2 in one line"
        for cid in ids:
            line = next(line for line in lines if f"{cid} round 2/2" in line)
            assert "privacy budget exceeded" in line and "budget epsilon 2.3" in line
            with _ledger(tmp_path, keys, cid, budget) as ledger:
                assert ledger.rounds == 1
                spent[cid] = ledger.spent_epsilon
            assert f"epsilon spent so far is {spent[cid]:.4g} over 1 round(s)" in line
        assert _checkpoint_metadata(tmp_path, ids[0])["rounds_done"] == "1"
        for name in (CHECKPOINT_FILE, "metrics.jsonl"):
            (_out(tmp_path, ids[0]) / name).unlink()
        (_ledger_path(tmp_path, ids[1])).unlink()
        caplog.clear()
        return _parties(tmp_path, federation, 2, ONE_ROUND_DP, ids[:2])(port)

    phases = [_parties(tmp_path, federation, 2, ONE_ROUND_DP), forget_the_run]
    assert _federate(tmp_path, federation, phases) == [[1, 1, 1], [1, 2]]
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 2
    restarted = next(line for line in lines if ids[0] in line)
    assert f"{ids[0]} round 1/2: privacy budget exceeded" in restarted
    assert f"epsilon spent so far is {spent[ids[0]]:.4g} over 1 round(s)" in restarted
    forgotten = next(line for line in lines if ids[1] in line)
    assert "holds epsilon 0, but the checkpoint" in forgotten and "restore it" in forgotten
    assert not _logged(caplog, ": training on"), "nothing is trained after the restart"
    with _ledger(tmp_path, keys, ids[0], budget) as ledger:
        assert ledger.rounds == 1 and ledger.spent_epsilon == pytest.approx(spent[ids[0]])
    assert not (_ledger_path(tmp_path, ids[1])).exists(), "nothing charged"


# --- (c) client-level DP: the client's ledger ---------------------------------------------------


def test_client_dp_rounds_charge_the_ledger_each_round(
    tmp_path: Path, federation: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="fedveil.train")
    phases = [_parties(tmp_path, federation, 2, CLIENT_DP)]
    assert _federate(tmp_path, federation, phases, dp="client", dp_noise_multiplier=1.0) == [
        [0, 0, 0]
    ]
    _, keys, ids, _, _, _ = federation
    for cid in ids:
        stored = _ledger_file(tmp_path, cid)
        assert len(stored["rounds"]) == 2
        assert stored["rounds"][0]["events"][0]["mechanism"] == "distributed_discrete_gaussian"
        with _ledger(tmp_path, keys, cid, PrivacyBudget(50.0, 1e-5)) as ledger:
            spent = ledger.spent_epsilon
        records = _metrics(tmp_path, cid)
        assert [r["privacy"]["rounds_charged"] for r in records] == [1, 2]
        first, second = (r["privacy"]["epsilon"] for r in records)
        assert 0 < first < second == pytest.approx(spent, rel=1e-9) and second <= 50.0
        assert records[-1]["privacy"]["kind"] == "client"
        assert len([m for m in _logged(caplog, "privacy spent") if m.startswith(cid)]) == 2


def test_a_client_dp_party_refuses_a_round_without_dp_before_training(
    tmp_path: Path,
    federation: tuple,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level("INFO", logger="fedveil.train")
    _, _, ids, _, _, _ = federation
    phases = [_parties(tmp_path, federation, 1, CLIENT_DP, ids[:1])]
    assert _federate(tmp_path, federation, phases) == [[1]]
    line = _one_error_line(capsys.readouterr().err)
    assert f"{ids[0]} round 1/1" in line and "refusing to send an un-noised update" in line
    assert not _logged(caplog, ": training on")
    assert not (_ledger_path(tmp_path, ids[0])).exists()


# --- (d) settings refused in one line, before anything is loaded or sent ---------------------


@pytest.mark.parametrize(
    ("dp", "message"),
    [
        ('kind = "local"\nepsilon = 1.0', "dp.kind: must be 'sample' or 'client', got 'local'"),
        ('kind = "sample"', "dp.epsilon: is required"),
        ('kind = "sample"\nepsilon = 0', "dp.epsilon: must be > 0"),
        ('kind = "sample"\nepsilon = 1.0\ndelta = 1.5', "dp.delta: must be < 1"),
        ('kind = "sample"\nepsilon = 1.0\naccountant = "moments"', "dp.accountant: must be"),
        ('kind = "sample"\nepsilon = 1.0\nepsilonn = 2.0', "dp.epsilonn: unknown key"),
        ('kind = "sample"\nepsilon = 1.0\nnoise_multiplier = 0', "dp.noise_multiplier: must"),
        (
            'kind = "client"\nepsilon = 1.0\nnoise_multiplier = 1.0',
            'dp.noise_multiplier is for kind = "sample"',
        ),
        ('kind = "client"\nepsilon = 1.0\nbatch_size = 8', 'dp.batch_size is for kind = "sample"'),
    ],
)
def test_bad_dp_values_are_refused_in_one_line(
    tmp_path: Path,
    federation: tuple,
    capsys: pytest.CaptureFixture[str],
    dp: str,
    message: str,
) -> None:
    model_dir, keys, ids, texts, _, _ = federation
    config = _party_toml(tmp_path, keys, ids[0], model_dir, texts[0], 9, 1, f"\n[dp]\n{dp}\n")
    assert main(["train", "--config", str(config)]) == 2
    assert message in _one_error_line(capsys.readouterr().err)


def test_dp_settings_that_cannot_run_together_are_refused(
    tmp_path: Path, federation: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir, keys, ids, texts, _, _ = federation
    config = _party_toml(tmp_path, keys, ids[0], model_dir, texts[0], 9, 1, SAMPLE_DP)
    config.write_text(config.read_text().replace("epochs = 1", "epochs = 2"))
    assert main(["train", "--config", str(config)]) == 2
    assert "recipe.epochs and recipe.max_steps do not apply" in _one_error_line(
        capsys.readouterr().err
    )
    config = _party_toml(tmp_path, keys, ids[0], model_dir, texts[0], 9, 1, CLIENT_DP)
    config.write_text(config.read_text().replace("rounds = 1", 'rounds = 1\nallow_mode = ["ckks"]'))
    assert main(["train", "--config", str(config)]) == 2
    assert "those modes add no DP noise" in _one_error_line(capsys.readouterr().err)


def test_a_ledger_in_use_or_of_another_federation_is_refused(
    tmp_path: Path, federation: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir, keys, ids, texts, _, _ = federation
    config = _party_toml(tmp_path, keys, ids[0], model_dir, texts[0], 9, 1, SAMPLE_DP)
    path = _ledger_path(tmp_path, ids[0])
    budget = PrivacyBudget(8.0, 1e-5)
    with PersistentPrivacyLedger.open(path, budget, federation="sha256:00", owner=ids[0]) as held:
        assert main(["train", "--config", str(config)]) == 2
        assert "in use by another process" in _one_error_line(capsys.readouterr().err)
        held.charge([GaussianEvent(2.0, 0.5, 2)])
    assert main(["train", "--config", str(config)]) == 2
    assert "belongs to another federation" in _one_error_line(capsys.readouterr().err)
