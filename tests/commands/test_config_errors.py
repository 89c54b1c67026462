"""Configuration errors are errors, not tracebacks: `fedveil server`, `client` and `audit`.

Attacked as a tired operator would: a malformed TOML, a value of the wrong type
(`dimension = "1000"`, `port = "50051"`, `bits = 32.5`), a flag of the wrong type,
`--insecure` without a roster, a round the roster cannot run. Each must exit 2 with one
line on stderr that names the key and what to fix, before a port is bound or a file is
written. Most cases run the real entry point in process (`fedveil.cli.main`); one real
subprocess per command shows that no traceback reaches stderr.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedveil.cli import main
from tests.helpers import REPO_ROOT
from tests.helpers.service_harness import enrol_federation

ROOT = REPO_ROOT
MODEL_HASH = hashlib.sha256(b"fedveil-config-errors").hexdigest()
NOT_UTF8 = b"\xff\xfe[round]\ndimension = 10\n"


def _one_line(err: str, prefix: str = "error: ") -> str:
    """The single line a bad configuration prints (no traceback, no usage block)."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix) or f": error: {prefix}" in lines[0], err
    return lines[0]


# --- fedveil server --------------------------------------------------------------------------


def _server(tmp_path: Path, toml: str | bytes | None, *flags: str) -> int:
    # an unroutable --host: should a case get past the checks, binding fails at once
    argv = ["server", "--state-dir", str(tmp_path / "state")]
    if not (isinstance(toml, str) and "host" in toml):
        argv += ["--host", "256.0.0.1"]
    if toml is not None:
        config = tmp_path / "server.toml"
        if isinstance(toml, bytes):
            config.write_bytes(toml)
        else:
            config.write_text(toml)
        argv += ["--config", str(config)]
    return main([*argv, *flags])


ROUND_OK = f'dimension = 10\nmodel_hash = "{MODEL_HASH}"\n'


@pytest.mark.parametrize(
    ("toml", "names"),
    [
        ("[round\ndimension = 10\n", ("not valid TOML", "line 1")),
        (NOT_UTF8, ("not valid TOML", "UTF-8")),
        (f'[round]\ndimension = "1000"\nmodel_hash = "{MODEL_HASH}"\n', ("round.dimension",)),
        (f'[server]\nport = "50051"\n[round]\n{ROUND_OK}', ("server.port", "integer")),
        (f"[round]\n{ROUND_OK}bits = 32.5\n", ("round.bits", "integer", "32.5")),
        (f'[round]\n{ROUND_OK}clip = "1.0"\n', ("round.clip", "number")),
        (f"[round]\n{ROUND_OK}clip = inf\n", ("round.clip", "finite")),
        (f'[round]\n{ROUND_OK}dp_rotate = "yes"\n', ("round.dp_rotate", "true or false")),
        (f"[round]\n{ROUND_OK}threshold = true\n", ("round.threshold", "integer")),
        (f"[round]\n{ROUND_OK}mode = 3\n", ("round.mode", "string")),
        ("[round]\ndimension = 10\nmodel_hash = 5\n", ("round.model_hash", "hex")),
        (f"[server]\nkeys_dir = 5\n[round]\n{ROUND_OK}", ("server.keys_dir", "path")),
        (f"[server]\ninsecure = 1\n[round]\n{ROUND_OK}", ("server.insecure", "true or false")),
        (f"[server]\ninsecure = true\nhost = 1\n[round]\n{ROUND_OK}", ("server.host", "string")),
        (f"server = 5\n[round]\n{ROUND_OK}", ("[server]", "table")),
        (f"[round]\n{ROUND_OK}dimesion = 10\n", ("round.dimesion", "unknown key")),
    ],
)
def test_server_config_errors_exit_2_naming_the_key(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    toml: str | bytes,
    names: tuple[str, ...],
) -> None:
    text = toml if isinstance(toml, str) else ""
    assert _server(tmp_path, toml, *(() if "insecure" in text else ("--insecure",))) == 2
    captured = capsys.readouterr()
    line = _one_line(captured.err)
    for name in names:
        assert name in line, line
    assert "listening" not in captured.out
    assert not (tmp_path / "state").exists()


def test_server_missing_or_unreadable_config_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["server", "--config", str(tmp_path / "absent.toml")]) == 2
    assert "does not exist" in _one_line(capsys.readouterr().err)
    assert main(["server", "--config", str(tmp_path)]) == 2
    assert "cannot read" in _one_line(capsys.readouterr().err)


def test_insecure_without_a_roster_exits_2_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        _server(tmp_path, None, "--insecure", "--dimension", "10", "--model-hash", MODEL_HASH) == 2
    )
    line = _one_line(capsys.readouterr().err)
    assert "--insecure" in line and "--keys-dir" in line and "roster" in line
    assert not (tmp_path / "state").exists()


@pytest.fixture(scope="module")
def server_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return enrol_federation(tmp_path_factory.mktemp("fed"), ["org-0", "org-1", "org-2"])


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (("--bits", "7"), ("bits",)),
        (("--threshold", "5"), ("threshold",)),
        (("--neighbours", "9"), ("neighbours",)),
        (("--min-cohort", "10"), ("min_cohort 10", "3 clients")),
        (("--clip", "-1"), ("clip",)),
        (("--max-weight", "0"), ("max_weight",)),
        (("--mode", "ckks", "--ckks-key-holder", "org-9"), ("ckks_key_holder", "org-9")),
        (
            ("--dp", "client", "--dp-noise-multiplier", "1", "--dp-min-clients", "9"),
            ("min_clients",),
        ),
    ],
)
def test_a_round_the_roster_cannot_run_exits_2_before_binding(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    server_dir: Path,
    flags: tuple[str, ...],
    names: tuple[str, ...],
) -> None:
    status = _server(
        tmp_path,
        None,
        "--keys-dir",
        str(server_dir),
        "--dimension",
        "64",
        "--model-hash",
        MODEL_HASH,
        *flags,
    )
    assert status == 2
    captured = capsys.readouterr()
    line = _one_line(captured.err)
    for name in names:
        assert name in line, line
    assert "listening" not in captured.out
    assert not (tmp_path / "state").exists()


def test_server_flag_of_the_wrong_type_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["server", "--port", "50051x"])
    assert info.value.code == 2
    line = _one_line(capsys.readouterr().err, prefix="argument --port")
    assert "invalid int value: '50051x'" in line and "fedveil server --help" in line


# --- fedveil client --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client_files(tmp_path_factory: pytest.TempPathFactory, server_dir: Path) -> dict[str, Path]:
    root = server_dir.parent
    update = root / "update.npy"
    np.save(update, np.zeros(8, dtype=np.float32))
    return {
        "credentials": root / "clients" / "org-0",
        "roster": server_dir / "roster.json",
        "update": update,
    }


def _client_toml(files: dict[str, Path], extra: str) -> str:
    return (
        "[client]\n"
        'server = "localhost:50051"\n'
        f'credentials = "{files["credentials"]}"\n'
        f'roster = "{files["roster"]}"\n'
        f'update = "{files["update"]}"\n'
        f'model_hash = "{MODEL_HASH}"\n'
        f'summary_json = "{files["update"].parent / "summary.json"}"\n'
        f"{extra}"
    )


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        ('weight = "3"\n', ("weight", "int")),
        ("weight = 3\nrounds = 2.5\n", ("rounds", "int")),
        ("weight = 3\njoin_timeout_s = true\n", ("join_timeout_s", "float")),
        ("weight = 3\nprivacy_epsilon = nan\n", ("epsilon", "finite")),
        ('weight = 3\nallow_mode = "ckks"\n', ("allow_mode", "list")),
        ("weight = 3\nlog_level = 10\n", ("log_level",)),
        ("weight = 3\nmin_cohort = 1\n", ("min_cohort",)),
        ('weight = 3\nweight_mode = "loud"\n', ("weight",)),
        ("weight = 3\nwieght = 3\n", ("client.wieght", "unknown key")),
        ("weight = 3\n[server]\nport = 1\n", ("unknown tables", "[client]")),
        ("weight = [3\n", ("not valid TOML",)),
    ],
)
def test_client_config_errors_exit_2_naming_the_key(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    client_files: dict[str, Path],
    extra: str,
    names: tuple[str, ...],
) -> None:
    config = tmp_path / "client.toml"
    config.write_text(_client_toml(client_files, extra))
    # a short join timeout: should the config be accepted, the run ends at once
    assert main(["client", "--config", str(config), "--join-timeout-s", "0.2"]) == 2
    line = _one_line(capsys.readouterr().err)
    for name in names:
        assert name in line, line
    assert not (client_files["update"].parent / "summary.json").exists()


def test_client_unreadable_config_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "client.toml"
    config.write_bytes(b"\xff\xfe[client]\n")
    assert main(["client", "--config", str(config)]) == 2
    assert "not valid TOML" in _one_line(capsys.readouterr().err)
    assert main(["client", "--config", str(tmp_path)]) == 2
    assert "cannot read" in _one_line(capsys.readouterr().err)
    assert main(["client", "--config", str(tmp_path / "absent.toml")]) == 2
    assert "does not exist" in _one_line(capsys.readouterr().err)


def test_client_flag_of_the_wrong_type_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["client", "--weight", "three"])
    assert info.value.code == 2
    line = _one_line(capsys.readouterr().err, prefix="argument --weight")
    assert "invalid int value: 'three'" in line


# --- fedveil audit ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "names"),
    [
        (b"[audit\n", ("not valid TOML",)),
        (NOT_UTF8, ("not valid TOML", "UTF-8")),
        (b"[dp]\nclip_norm = true\n", ("[dp] clip_norm", "number")),
        (b'[dp]\nnoise_multiplier = "1.5"\n', ("[dp] noise_multiplier", "number")),
        (b"[dp]\ndelta = 2\n", ("delta", "(0, 1)")),
        (b"[audit]\nseed = 1.5\n", ("[audit] seed", "integer")),
        (b'[federation]\nclients = "10"\n', ("[federation] clients", "integer")),
        (b'[thresholds]\nmax_auc = "0.7"\n', ("max_auc", "number")),
        (b"audit = 3\n", ("[audit]", "table")),
    ],
)
def test_audit_config_errors_exit_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: bytes, names: tuple[str, ...]
) -> None:
    config = tmp_path / "audit.toml"
    config.write_bytes(toml)
    out = tmp_path / "out"
    # --workers 0: should the config be accepted, exit 2 on that instead of running
    argv = ["audit", "--config", str(config), "--out", str(out), "--workers", "0"]
    assert main(argv) == 2
    line = _one_line(capsys.readouterr().err, prefix="fedveil audit: configuration error: ")
    for name in names:
        assert name in line, line
    assert not out.exists()


def test_audit_flag_of_the_wrong_type_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["audit", "--out", str(tmp_path / "out"), "--workers", "two"])
    assert info.value.code == 2
    assert "invalid int value: 'two'" in _one_line(capsys.readouterr().err, "argument --workers")
    assert not (tmp_path / "out").exists()


# --- real processes: nothing but one line on stderr ------------------------------------------


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "fedveil.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


def test_real_processes_print_one_line_and_write_nothing(
    tmp_path: Path, client_files: dict[str, Path]
) -> None:
    (tmp_path / "server.toml").write_text(
        f'[server]\nport = "50051"\ninsecure = true\n[round]\n{ROUND_OK}bits = 32.5\n'
    )
    (tmp_path / "client.toml").write_text(_client_toml(client_files, 'weight = "3"\n'))
    (tmp_path / "audit.toml").write_text("[dp]\nclip_norm = true\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    server = _run(["server", "--config", "server.toml", "--state-dir", "state"], tmp_path)
    client = _run(["client", "--config", "client.toml"], tmp_path)
    audit = _run(["audit", "--config", "audit.toml", "--out", "out", "--workers", "0"], tmp_path)
    insecure = _run(
        ["server", "--insecure", "--dimension", "10", "--model-hash", MODEL_HASH, "--port", "0"],
        tmp_path,
    )
    for proc, key in (
        (server, "server.port"),
        (client, "weight"),
        (audit, "[dp] clip_norm"),
        (insecure, "--insecure"),
    ):
        assert proc.returncode == 2, proc.stderr
        assert key in _one_line(proc.stderr, prefix=""), proc.stderr
        assert "listening" not in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no state, out or ledger
    assert not (tmp_path / ".fedveil-server").exists()
