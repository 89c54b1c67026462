"""The client's privacy ledger survives restarts: a JSON file, written before the upload.

Attacked as an operator (or a crash) would: a client restarted, or run as one process per
round, must not start its budget from zero; a ledger of another federation, client or
budget, a corrupt one, or one held by a running process is refused with one clear line;
a charge that cannot be written is not spent and nothing is sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedveil.cli import main
from fedveil.clients.privacy_ledger import (
    FORMAT,
    VERSION,
    PersistentPrivacyLedger,
    PrivacyLedgerWriteError,
    event_from_json,
    event_to_json,
    federation_fingerprint,
)
from fedveil.errors import ConfigError, PrivacyBudgetExceededError
from fedveil.runners.simulation import Federation, make_config, run_round
from fedveil.secagg.dp import (
    ClientDPConfig,
    DistributedDiscreteGaussianEvent,
    GaussianEvent,
    PrivacyBudget,
    PrivacyLedger,
    SkellamEvent,
)
from fedveil.server.keys_store import client_dir
from tests.helpers import REPO_ROOT
from tests.helpers.service_harness import (
    BASE_MODEL_HASH,
    client_for,
    make_keys,
    running_server,
    settings_for,
)

FED_A = "sha256:" + "a" * 64
FED_B = "sha256:" + "b" * 64
BUDGET = PrivacyBudget(8.0, 1e-5)
# One client-level DP round of a 3-client federation, as the SDK charges it (RDP: ~4).
ROUND = (
    DistributedDiscreteGaussianEvent(
        client_sigma=20.0, num_clients=3, l2_sensitivity=30.0, l1_sensitivity=500.0, dim=1024
    ),
)
ROOT = REPO_ROOT


def _open(path: Path, **kwargs: object) -> PersistentPrivacyLedger:
    args: dict[str, object] = {"federation": FED_A, "owner": "org-00"}
    args.update(kwargs)
    budget = args.pop("budget", BUDGET)
    return PersistentPrivacyLedger.open(path, budget, **args)  # type: ignore[arg-type]


def _self_signed_ca(name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


# --- the file ------------------------------------------------------------------------------


def test_events_round_trip_as_plain_json() -> None:
    events = [
        *ROUND,
        GaussianEvent(1.1, 0.01, 300),
        SkellamEvent(400.0, 5, 30.0, 600.0, sampling_prob=0.5, steps=2),
    ]
    for event in events:
        record = json.loads(json.dumps(event_to_json(event)))
        assert event_from_json(record) == event


def test_federation_fingerprint_is_the_sha256_of_the_ca_certificate() -> None:
    first, second = _self_signed_ca("ca one"), _self_signed_ca("ca two")
    der = x509.load_pem_x509_certificate(first).public_bytes(serialization.Encoding.DER)
    assert federation_fingerprint(first) == "sha256:" + hashlib.sha256(der).hexdigest()
    assert federation_fingerprint(first) != federation_fingerprint(second)
    with pytest.raises(ConfigError, match="not a PEM certificate"):
        federation_fingerprint(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


def test_a_ledger_is_written_at_its_first_charge_and_reloads_every_charge(tmp_path: Path) -> None:
    path = tmp_path / "creds" / "privacy-ledger.json"
    with _open(path) as ledger:
        assert not path.exists()  # nothing spent, nothing written
        report = ledger.charge(ROUND)
        assert ledger.rounds == 1
        data = json.loads(path.read_text())
        assert data["format"] == FORMAT and data["version"] == VERSION
        assert data["federation"] == FED_A and data["owner"] == "org-00"
        assert data["budget"] == {"epsilon": 8.0, "delta": 1e-5}
        assert data["accountant"] == "prv" and data["discrete_as_gaussian"] is False
        assert path.stat().st_mode & 0o777 == 0o600
    data = json.loads(path.read_text())
    assert len(data["rounds"]) == 1
    assert data["rounds"][0]["epsilon_after"] == report.epsilon
    with _open(path) as again:
        assert again.rounds == 1
        assert again.events == ROUND
        assert again.spent_epsilon == pytest.approx(report.epsilon, rel=1e-12)


def test_a_restarted_process_sees_the_epsilon_spent_before_it(tmp_path: Path) -> None:
    """A child process charges one round and dies without closing anything (os._exit):
    the charge is already on disk, and this process starts from it, not from zero."""
    path = tmp_path / "privacy-ledger.json"
    script = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        from fedveil.clients.privacy_ledger import PersistentPrivacyLedger
        from fedveil.secagg.dp import DistributedDiscreteGaussianEvent, PrivacyBudget
        event = DistributedDiscreteGaussianEvent(
            client_sigma=20.0, num_clients=3, l2_sensitivity=30.0, l1_sensitivity=500.0,
            dim=1024)
        ledger = PersistentPrivacyLedger.open(
            Path({str(path)!r}), PrivacyBudget(5.0, 1e-5), federation={FED_A!r},
            owner="org-00")
        report = ledger.charge([event])
        print(repr(report.epsilon), flush=True)
        os._exit(0)
        """
    )
    child = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert child.returncode == 0, child.stderr
    spent_in_child = float(child.stdout.strip())
    # the child's lock went with it; budget 5 holds one round of ROUND (~4.0), not two
    with _open(path, budget=PrivacyBudget(5.0, 1e-5)) as ledger:
        assert ledger.rounds == 1
        assert ledger.spent_epsilon == pytest.approx(spent_in_child, rel=1e-12)
        fresh = PrivacyLedger(BUDGET)
        assert fresh.projected(ROUND).epsilon < 5.0 < ledger.projected(ROUND).epsilon
        with pytest.raises(PrivacyBudgetExceededError, match="over 1 round"):
            ledger.charge(ROUND)
        assert ledger.rounds == 1
    assert len(json.loads(path.read_text())["rounds"]) == 1


def test_a_ledger_held_by_a_running_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "privacy-ledger.json"
    first = _open(path)
    with pytest.raises(ConfigError, match="in use by another process"):
        _open(path)
    first.close()
    with pytest.raises(ConfigError, match="closed"):
        first.charge(ROUND)
    _open(path).close()


def _valid_document(tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "seed.json"
    with _open(path) as ledger:
        ledger.charge(ROUND)
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def _mutated(doc: dict[str, Any], change: str) -> bytes:
    doc = json.loads(json.dumps(doc))
    event = doc["rounds"][0]["events"][0]
    if change == "unknown-mechanism":
        event["mechanism"] = "laplace"
    elif change == "extra-field":
        event["seed"] = 7
    elif change == "negative-sigma":
        event["client_sigma"] = -1.0
    elif change == "string-number":
        event["dim"] = "1024"
    elif change == "newer-version":
        doc["version"] = VERSION + 1
    elif change == "other-format":
        doc["format"] = "something-else"
    elif change == "no-rounds":
        del doc["rounds"]
    elif change == "bad-budget":
        doc["budget"] = {"epsilon": -1, "delta": 1e-5}
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("truncated", "Expecting|Unterminated"),
        ("empty", "Expecting value"),
        ("garbage", "not UTF-8"),
        ("not-an-object", "top level must be an object"),
        ("nan", "NaN is not a number"),
        ("unknown-mechanism", "unknown mechanism 'laplace'"),
        ("extra-field", "has the fields"),
        ("negative-sigma", "client_sigma"),
        ("string-number", "dim"),
        ("newer-version", "newer fedveil"),
        ("other-format", "format is"),
        ("no-rounds", "missing rounds"),
        ("bad-budget", "epsilon"),
    ],
)
def test_a_corrupt_ledger_is_refused_never_reset(tmp_path: Path, damage: str, reason: str) -> None:
    doc = _valid_document(tmp_path)
    good = json.dumps(doc).encode()
    raw = {
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "garbage": os.urandom(64) + b"\xff",
        "not-an-object": b"[1, 2, 3]",
        "nan": good.replace(b'"epsilon_after": ', b'"epsilon_after": NaN, "x": ', 1),
    }
    content = raw[damage] if damage in raw else _mutated(doc, damage)
    path = tmp_path / "privacy-ledger.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        _open(path)
    message = str(info.value)
    assert message.startswith(f"privacy ledger {path} is corrupt (")
    assert "restore the file from a backup" in message and "\n" not in message
    assert re.search(reason, message), message
    assert path.read_bytes() == content  # never rewritten
    path.unlink()
    _open(path).close()  # its lock was released


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"federation": FED_B}, "belongs to another federation"),
        ({"owner": "org-01"}, "belongs to client 'org-00', not 'org-01'"),
        ({"budget": PrivacyBudget(16.0, 1e-5)}, "created with the budget epsilon=8"),
        ({"budget": PrivacyBudget(8.0, 1e-6)}, "this run asks for epsilon=8 delta=1e-06"),
        ({"method": "rdp"}, "accounts with prv"),
    ],
)
def test_a_ledger_is_bound_to_its_federation_client_budget_and_accountant(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    path = tmp_path / "privacy-ledger.json"
    with _open(path) as ledger:
        ledger.charge(ROUND)
    before = path.read_bytes()
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        _open(path, **kwargs)
    assert path.read_bytes() == before


def test_a_charge_that_cannot_be_written_is_not_spent_and_nothing_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK charges just before masking: a ledger that cannot be written refuses the
    round there, so the client sends no masked input and the round goes on without it."""
    dim = 64
    federation = Federation.enrol(5)
    config = make_config(federation, dim, dp=ClientDPConfig(1.0, 2.0, 3, 5, dim))
    victim = federation.ids[0]
    path = tmp_path / "privacy-ledger.json"
    ledger = _open(path, owner=victim, budget=PrivacyBudget(50.0, 1e-5))

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("fedveil.durable.os.replace", disk_full)
    gen = np.random.default_rng(0)
    inputs = {cid: gen.normal(size=dim) * 0.01 for cid in federation.ids}
    report = run_round(config, federation, inputs, ledgers={victim: ledger})
    assert isinstance(report.refusals[victim], PrivacyLedgerWriteError)
    assert "nothing was sent" in str(report.refusals[victim])
    assert ledger.rounds == 0 and not path.exists()
    assert report.result is not None and victim not in report.result.survivors
    assert not list(tmp_path.glob(".privacy-ledger.json.*"))  # no temporary left behind
    monkeypatch.undo()
    again = run_round(
        dataclasses.replace(config, round_id=2), federation, inputs, ledgers={victim: ledger}
    )
    assert victim in again.result.survivors  # type: ignore[union-attr]
    assert ledger.rounds == 1 and len(json.loads(path.read_text())["rounds"]) == 1
    ledger.close()


# --- fedveil client ------------------------------------------------------------------------


def _client_argv(keys: Path, update: Path, *extra: str) -> list[str]:
    return [
        "client",
        "--server",
        "localhost:1",
        "--credentials",
        str(client_dir(keys, "org-00")),
        "--roster",
        str(keys / "roster.json"),
        "--update",
        str(update),
        "--weight",
        "1",
        "--model-hash",
        BASE_MODEL_HASH.hex(),
        "--join-timeout-s",
        "0.5",
        *extra,
    ]


@pytest.fixture(scope="module")
def federation_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("fed")
    keys, _ = make_keys(root, 3)
    update = root / "update.npy"
    np.save(update, np.full(16, 0.01, dtype=np.float32))
    return keys, update


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_budget_without_a_ledger_file_refuses_to_start(
    federation_keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    keys, update = federation_keys
    assert main(_client_argv(keys, update, "--privacy-epsilon", "8")) == 2
    assert "--privacy-ledger PATH" in _one_error_line(capsys)
    ledger = keys.parent / "alone.json"
    assert main(_client_argv(keys, update, "--privacy-ledger", str(ledger))) == 2
    assert "needs --privacy-epsilon" in _one_error_line(capsys)
    assert not ledger.exists()


def test_the_command_refuses_a_ledger_of_another_federation_budget_or_a_corrupt_one(
    federation_keys: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    keys, update = federation_keys
    path = tmp_path / "privacy-ledger.json"
    ca = (client_dir(keys, "org-00") / "ca.pem").read_bytes()
    with PersistentPrivacyLedger.open(
        path, BUDGET, federation=federation_fingerprint(ca), owner="org-00"
    ) as ledger:
        ledger.charge(ROUND)
    budgeted = ("--privacy-ledger", str(path), "--privacy-epsilon", "8")
    # same budget: loaded, then the (absent) server is not reached: exit 1, not 2
    with caplog.at_level(logging.INFO, logger="fedveil.client"):
        assert main(_client_argv(keys, update, *budgeted)) == 1
    assert "DEADLINE_EXCEEDED" in _one_error_line(capsys)
    assert f"privacy ledger {path}: epsilon 4" in caplog.text
    assert "over 1 round(s)" in caplog.text
    assert (
        main(_client_argv(keys, update, "--privacy-ledger", str(path), "--privacy-epsilon", "9"))
        == 2
    )
    assert "created with the budget epsilon=8" in _one_error_line(capsys)
    other = tmp_path / "other-fed.json"
    with PersistentPrivacyLedger.open(other, BUDGET, federation=FED_B, owner="org-00") as led:
        led.charge(ROUND)
    assert (
        main(_client_argv(keys, update, "--privacy-ledger", str(other), "--privacy-epsilon", "8"))
        == 2
    )
    assert "belongs to another federation" in _one_error_line(capsys)
    path.write_bytes(path.read_bytes()[:40])
    assert main(_client_argv(keys, update, *budgeted)) == 2
    assert "is corrupt" in _one_error_line(capsys)


def test_fedveil_client_run_twice_spends_one_budget(tmp_path: Path) -> None:
    """Two DP rounds; org-00 is a `fedveil client` process per round (a restart between
    them), the others SDK clients with in-memory ledgers. The second process starts from
    the first one's ledger file: its cumulative epsilon after round 2 is the two-round
    epsilon the SDK clients report, not one round's again."""
    keys, ids = make_keys(tmp_path, 3)
    updates = tmp_path / "org-00.npy"
    np.save(updates, np.full(1000, 0.01, dtype=np.float32))
    ledger_path = tmp_path / "org-00" / "privacy-ledger.json"
    settings = settings_for(
        tmp_path, keys, rounds=2, stage_timeout_s=60.0, dp="client", dp_noise_multiplier=1.0
    )

    async def cli_round(port: int, number: int, previous: str | None) -> dict[str, Any]:
        summary = tmp_path / f"summary-{number}.json"
        argv = [
            sys.executable,
            "-m",
            "fedveil.cli",
            *_client_argv(keys, updates)[:-2],  # without --join-timeout-s
            "--join-timeout-s",
            "60",
            "--summary-json",
            str(summary),
            "--privacy-epsilon",
            "20",
            "--privacy-ledger",
            str(ledger_path),
        ]
        argv[argv.index("localhost:1")] = f"localhost:{port}"
        if previous:
            argv += ["--previous-result", previous]
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=180)
        assert proc.returncode == 0, err.decode()[-3000:]
        stats: dict[str, Any] = json.loads(summary.read_text())[-1]
        stats["stderr"] = err.decode()
        return stats

    async def run() -> tuple[list[dict[str, Any]], list[float]]:
        summaries: list[dict[str, Any]] = []
        sdk_spent: list[float] = []
        async with running_server(settings) as server:
            sdk = [
                client_for(keys, c, server.port, privacy_budget=PrivacyBudget(20.0, 1e-5))
                for c in ids[1:]
            ]
            previous = None
            for number in (1, 2):
                cli, *_ = await asyncio.gather(
                    cli_round(server.port, number, previous),
                    *(c.run_round(np.full(1000, 0.02), 1, join_timeout_s=60) for c in sdk),
                )
                summaries.append(cli)
                previous = f"{cli['round_id']}:{cli['result_digest']}"
                ledger = sdk[0].privacy_ledger
                assert ledger is not None
                sdk_spent.append(ledger.spent_epsilon)
            for c in sdk:
                await c.close()
        return summaries, sdk_spent

    summaries, sdk_spent = asyncio.run(run())
    first, second = (s["privacy_spent"]["epsilon"] for s in summaries)
    assert first == pytest.approx(sdk_spent[0], rel=1e-9)
    assert second == pytest.approx(sdk_spent[1], rel=1e-9) and second > first
    assert "nothing spent over 0 round(s)" in str(summaries[0]["stderr"])
    assert "spent over 1 round(s)" in str(summaries[1]["stderr"])
    stored = json.loads(ledger_path.read_text())
    assert len(stored["rounds"]) == 2
    ca = (client_dir(keys, "org-00") / "ca.pem").read_bytes()
    assert stored["federation"] == federation_fingerprint(ca)
