"""`fedveil keys operator` / `revoke-operator`, the operator's certificate, and the
one-line errors of `fedveil status` and `fedveil server --metrics-*`."""

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID

from fedveil.cli import main
from fedveil.server.keys_store import load_ca
from fedveil.server.operators import OPERATORS_FILE, load_operators
from fedveil.server.pki import (
    OPERATOR_USAGE,
    is_operator_certificate,
    issue_client_certificate,
)
from tests.helpers.service_harness import BASE_MODEL_HASH, enrol_federation, enrolled_client_dir

Capture = pytest.CaptureFixture[str]


def federation(tmp_path: Path) -> tuple[Path, Path]:
    """(CA folder, server folder) of a dealer-free federation with three parties."""
    server_dir = enrol_federation(tmp_path, ["org-00", "org-01", "org-02"])
    return tmp_path / "ca", server_dir


def one_error_line(capsys: Capture) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def test_keys_operator_issues_a_pinned_operator_certificate(
    tmp_path: Path, capsys: Capture
) -> None:
    ca_dir, server_dir = federation(tmp_path)
    out = tmp_path / "ops"
    args = ["keys", "operator", "--ca-dir", str(ca_dir), "--server-dir", str(server_dir)]
    assert main([*args, "--name", "alice", "--out", str(out)]) == 0
    assert "pinned certificate SHA-256" in capsys.readouterr().out
    cert = x509.load_pem_x509_certificate((out / "operator.pem").read_bytes())
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert OPERATOR_USAGE in usage and ExtendedKeyUsageOID.CLIENT_AUTH in usage
    assert is_operator_certificate(cert)
    assert stat.S_IMODE((out / "operator.key").stat().st_mode) == 0o600
    assert load_operators(server_dir) == {"alice": cert.fingerprint(hashes.SHA256())}
    # a party's certificate, issued by the same CA, never carries the operator's usage
    party = issue_client_certificate(load_ca(ca_dir), "org-09")
    assert not is_operator_certificate(party.certificate)
    enrolled = enrolled_client_dir(server_dir, "org-00") / "client.pem"  # signed from a CSR
    assert not is_operator_certificate(x509.load_pem_x509_certificate(enrolled.read_bytes()))
    # the server still starts: the pins hold no key, the operator's key is elsewhere
    assert json.loads((server_dir / OPERATORS_FILE).read_text())["operators"][0]["name"] == "alice"
    assert main(["keys", "revoke-operator", "alice", "--server-dir", str(server_dir)]) == 0
    assert load_operators(server_dir) == {}


@pytest.mark.parametrize(
    ("name", "out", "phrase"),
    [
        ("al ice", "ops", "operator name"),
        ("alice", "server/ops", "must be apart"),
    ],
)
def test_keys_operator_refuses_bad_input_with_one_line(
    tmp_path: Path, capsys: Capture, name: str, out: str, phrase: str
) -> None:
    ca_dir, server_dir = federation(tmp_path)
    args = ["keys", "operator", "--ca-dir", str(ca_dir), "--server-dir", str(server_dir)]
    assert main([*args, "--name", name, "--out", str(tmp_path / out)]) == 2
    assert phrase in one_error_line(capsys)
    assert load_operators(server_dir) == {}


def test_keys_operator_refuses_a_server_folder_of_another_ca(
    tmp_path: Path, capsys: Capture
) -> None:
    ca_dir, _ = federation(tmp_path / "one")
    _, other_server = federation(tmp_path / "two")
    args = ["keys", "operator", "--ca-dir", str(ca_dir), "--server-dir", str(other_server)]
    assert main([*args, "--out", str(tmp_path / "ops")]) == 2
    assert "another CA" in one_error_line(capsys)
    assert main(["keys", "revoke-operator", "nobody", "--server-dir", str(other_server)]) == 2
    assert "not in" in one_error_line(capsys)


def test_status_without_credentials_exits_2_and_unreachable_exits_1(
    tmp_path: Path, capsys: Capture
) -> None:
    assert main(["status", "--server", "localhost:1", "--credentials", str(tmp_path)]) == 2
    assert "fedveil keys operator" in one_error_line(capsys)
    ca_dir, server_dir = federation(tmp_path)
    out = tmp_path / "ops"
    assert main(["keys", "operator", "--ca-dir", str(ca_dir), "--server-dir", str(server_dir),
                 "--out", str(out)]) == 0  # fmt: skip
    capsys.readouterr()
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [
        "status",
        "--server",
        f"localhost:{port}",
        "--credentials",
        str(out),
        "--timeout-s",
        "2",
    ]
    assert main(argv) == 1
    assert "UNAVAILABLE" in one_error_line(capsys)


def test_server_metrics_flags_are_checked_before_serving(tmp_path: Path, capsys: Capture) -> None:
    _, server_dir = federation(tmp_path)
    base = [
        "server", "--keys-dir", str(server_dir), "--state-dir", str(tmp_path / "state"),
        "--port", "0", "--dimension", "100", "--model-hash", BASE_MODEL_HASH.hex(),
    ]  # fmt: skip
    assert main([*base, "--metrics-port", "70000"]) == 2
    assert "metrics_port" in one_error_line(capsys)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main([*base, "--metrics-port", str(port)]) == 2
        assert "cannot serve metrics" in one_error_line(capsys)
    assert main([*base, "--shutdown-drain-s", "-1"]) == 2
    assert "--shutdown-drain-s" in one_error_line(capsys)
