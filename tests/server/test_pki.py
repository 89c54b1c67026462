"""PKI, roster and keys folder: certificates chain, secrets are 0600, the roster rejects
every malformed field, and a real mutual-TLS gRPC handshake on loopback accepts exactly
the enrolled clients."""

from __future__ import annotations

import argparse
import ipaddress
import json
import stat
from collections.abc import Callable, Generator, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    DNSName,
    IPAddress,
    PolicyBuilder,
    Store,
    VerificationError,
)

import fedveil.clients.credentials as client_layout
import fedveil.server.keys_store as keys_store
from fedveil.clients.credentials import ClientCredentials
from fedveil.commands import keys as keys_command
from fedveil.errors import ConfigError, FedveilError, UnauthenticatedError, UnknownClientError
from fedveil.secagg.crypto.identity import SigningIdentity
from fedveil.server.keys_store import (
    add_client,
    client_dir,
    init_keys,
    load_ca,
    load_roster,
    load_server_credentials,
)
from fedveil.server.pki import (
    CertificateAuthority,
    IssuedCertificate,
    create_ca,
    issue_client_certificate,
    issue_server_certificate,
)
from fedveil.server.roster import EnrolledClient, Roster

HOSTS = ["localhost", "127.0.0.1"]
CLIENTS = ["alice", "bob", "carol"]


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("keys")
    init_keys(root, HOSTS, CLIENTS)
    return root


@pytest.fixture(scope="module")
def ca(keys_dir: Path) -> CertificateAuthority:
    return load_ca(keys_dir)


@pytest.fixture(scope="module")
def other_ca() -> CertificateAuthority:
    return create_ca("someone else's CA")


def _verify_server(ca: CertificateAuthority, cert: x509.Certificate, host: str) -> None:
    try:
        subject: DNSName | IPAddress = IPAddress(ipaddress.ip_address(host))
    except ValueError:
        subject = DNSName(host)
    PolicyBuilder().store(Store([ca.certificate])).build_server_verifier(subject).verify(cert, [])


def _verify_client(ca: CertificateAuthority, cert: x509.Certificate) -> list[x509.GeneralName]:
    verifier = PolicyBuilder().store(Store([ca.certificate])).build_client_verifier()
    return list(verifier.verify(cert, []).subjects or [])


# --- certificates ---------------------------------------------------------------------


def test_server_certificate_chains_for_every_host_and_only_those(
    ca: CertificateAuthority, other_ca: CertificateAuthority
) -> None:
    server = issue_server_certificate(ca, HOSTS)
    for host in HOSTS:
        _verify_server(ca, server.certificate, host)
    with pytest.raises(VerificationError):
        _verify_server(ca, server.certificate, "evil.example")
    with pytest.raises(VerificationError):
        _verify_server(other_ca, server.certificate, "localhost")
    with pytest.raises(VerificationError):  # a server certificate cannot act as a client
        _verify_client(ca, server.certificate)


def test_client_certificate_carries_id_and_client_auth_only(ca: CertificateAuthority) -> None:
    issued = issue_client_certificate(ca, "alice")
    assert _verify_client(ca, issued.certificate) == [
        x509.UniformResourceIdentifier("fedveil:client:alice")
    ]
    assert issued.certificate.subject.rfc4514_string() == "CN=alice"
    eku = issued.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(VerificationError):  # nor a client certificate as a server
        _verify_server(ca, issued.certificate, "alice")


def test_keys_are_p256_signed_with_sha256(ca: CertificateAuthority) -> None:
    for cert in (ca.certificate, issue_client_certificate(ca, "x").certificate):
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert isinstance(key.curve, ec.SECP256R1)
        assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    constraints = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    assert (
        ca.certificate.not_valid_after_utc
        >= issue_client_certificate(ca, "x").certificate.not_valid_after_utc
    )


@pytest.mark.parametrize("bad", ["", "a" * 65, "has space", "sl/ash", "caf\u00e9", ".", ".."])
def test_bad_client_ids_are_refused_by_name(ca: CertificateAuthority, bad: str) -> None:
    with pytest.raises(ConfigError, match="client id"):
        issue_client_certificate(ca, bad)


@pytest.mark.parametrize(
    "hosts", [[], "localhost", ["bad host"], ["-x.example"], ["localhost", "LOCALHOST"]]
)
def test_bad_server_hostnames_are_refused(ca: CertificateAuthority, hosts: Any) -> None:
    with pytest.raises(ConfigError, match="hostname"):
        issue_server_certificate(ca, hosts)


def test_ca_round_trips_through_pem_and_rejects_a_foreign_key(
    ca: CertificateAuthority, other_ca: CertificateAuthority
) -> None:
    again = CertificateAuthority.from_pem(ca.cert_pem(), ca.key_pem())
    assert again.certificate == ca.certificate
    assert "PRIVATE" not in repr(again)
    with pytest.raises(ConfigError, match="does not belong"):
        CertificateAuthority.from_pem(ca.cert_pem(), other_ca.key_pem())
    leaf = issue_client_certificate(ca, "a")
    with pytest.raises(ConfigError, match="not marked as a CA"):
        CertificateAuthority(leaf.certificate, leaf.private_key)
    with pytest.raises(ConfigError, match="does not belong"):
        IssuedCertificate(leaf.certificate, other_ca.private_key)


# --- keys folder ----------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_layout_and_file_modes(keys_dir: Path) -> None:
    assert _mode(keys_dir / "ca.key") == 0o600
    assert _mode(keys_dir / "server" / "server.key") == 0o600
    assert _mode(keys_dir / "ca.pem") == 0o644
    assert (keys_dir / "server" / "server.pem").is_file()
    assert (keys_dir / "roster.json").is_file()
    for cid in CLIENTS:
        folder = keys_dir / "clients" / cid
        assert _mode(folder / "client.key") == 0o600
        assert _mode(folder / "identity.key") == 0o600
        assert (folder / "ca.pem").read_bytes() == (keys_dir / "ca.pem").read_bytes()
        assert b"BEGIN PRIVATE KEY" in (folder / "identity.key").read_bytes()  # PKCS#8


def test_writer_and_reader_agree_on_client_file_names() -> None:
    for name in ("CLIENT_CERT", "CLIENT_KEY", "CLIENT_IDENTITY", "CLIENT_CA"):
        assert getattr(keys_store, name) == getattr(client_layout, name), name


def test_client_credentials_match_the_roster(keys_dir: Path, ca: CertificateAuthority) -> None:
    roster = load_roster(keys_dir)
    assert roster.ids() == tuple(sorted(CLIENTS))
    creds = ClientCredentials.load(client_dir(keys_dir, "bob"))
    assert creds.client_id == "bob"
    assert creds.identity.verifying() == roster["bob"].identity
    cert = x509.load_pem_x509_certificate(creds.cert_pem)
    assert cert.fingerprint(hashes.SHA256()) == roster["bob"].certificate_sha256
    _verify_client(ca, cert)
    assert "PRIVATE" not in repr(creds) and "identity" not in repr(creds)
    server = load_server_credentials(keys_dir)
    key_pem, cert_pem, ca_pem = server
    assert ca_pem == ca.cert_pem() and b"PRIVATE KEY" in key_pem
    _verify_server(ca, x509.load_pem_x509_certificate(cert_pem), "127.0.0.1")


def test_client_credentials_reject_broken_folders(tmp_path: Path, keys_dir: Path) -> None:
    src = client_dir(keys_dir, "alice")
    for name in ("client.pem", "client.key", "identity.key", "ca.pem"):
        (tmp_path / name).write_bytes((src / name).read_bytes())
    (tmp_path / "client.key").write_bytes((client_dir(keys_dir, "bob") / "client.key").read_bytes())
    with pytest.raises(ConfigError, match="does not belong"):
        ClientCredentials.load(tmp_path)
    (tmp_path / "identity.key").unlink()
    with pytest.raises(ConfigError, match="missing"):
        ClientCredentials.load(tmp_path)


def test_init_refuses_to_replace_a_ca_unless_told(tmp_path: Path) -> None:
    init_keys(tmp_path, ["localhost"], ["a", "b"])
    first_ca = (tmp_path / "ca.pem").read_bytes()
    with pytest.raises(ConfigError, match="already holds a CA"):
        init_keys(tmp_path, ["localhost"], ["c"])
    assert (tmp_path / "ca.pem").read_bytes() == first_ca
    roster = init_keys(tmp_path, ["localhost"], ["a", "c"], overwrite=True)
    assert (tmp_path / "ca.pem").read_bytes() != first_ca
    assert roster.ids() == ("a", "c") and load_roster(tmp_path).ids() == ("a", "c")
    assert not (tmp_path / "clients" / "b").exists()  # stale material from the old CA
    with pytest.raises(ConfigError, match="more than once"):
        init_keys(tmp_path / "new", ["localhost"], ["a", "a"])
    assert not (tmp_path / "new").exists()  # nothing written before validation


def test_add_client_extends_roster_and_refuses_duplicates(tmp_path: Path) -> None:
    init_keys(tmp_path, ["localhost"], ["a"])
    enrolled = add_client(tmp_path, "d")
    roster = load_roster(tmp_path)
    assert roster.ids() == ("a", "d") and roster["d"] == enrolled
    _verify_client(
        load_ca(tmp_path),
        x509.load_pem_x509_certificate((client_dir(tmp_path, "d") / "client.pem").read_bytes()),
    )
    with pytest.raises(ConfigError, match="already enrolled"):
        add_client(tmp_path, "a")
    with pytest.raises(ConfigError, match="client id"):
        add_client(tmp_path, "../escape")
    with pytest.raises(ConfigError, match="not found"):
        add_client(tmp_path / "missing", "e")


# --- roster ---------------------------------------------------------------------------


def _enrolled(cid: str = "alice", fill: int = 1) -> EnrolledClient:
    return EnrolledClient(cid, SigningIdentity.generate().verifying(), bytes([fill]) * 32)


def test_roster_json_round_trip(tmp_path: Path) -> None:
    roster = Roster([_enrolled("b"), _enrolled("a", 2)])
    roster.save(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["version"] == 1 and [c["client_id"] for c in data["clients"]] == ["a", "b"]
    again = Roster.load(tmp_path / "r.json")
    assert again == roster and again.ids() == ("a", "b") and "a" in again and "z" not in again
    assert again.identities() == {c: roster[c].identity for c in ("a", "b")}
    assert again.without("a").ids() == ("b",)
    with pytest.raises(ConfigError, match="twice"):
        roster.with_client(_enrolled("a"))


def _good_entry() -> dict[str, Any]:
    return {"client_id": "a", "identity_public_key": "11" * 32, "certificate_sha256": "22" * 32}


def _with(**changes: Any) -> dict[str, Any]:
    entry = _good_entry()
    entry.update(changes)
    return {"version": 1, "clients": [{k: v for k, v in entry.items() if v is not None}]}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "JSON object"),
        ({"version": 2, "clients": []}, "unknown roster version 2"),
        ({"clients": []}, "unknown roster version None"),
        ({"version": 1, "clients": {}}, "'clients' must be a list"),
        ({"version": 1, "clients": ["a"]}, r"clients\[0\] must be an object"),
        (_with(certificate_sha256=None), r"missing fields \['certificate_sha256'\]"),
        (_with(extra="x"), r"unknown fields \['extra'\]"),
        (_with(client_id=7), "client_id must be a string"),
        (_with(client_id="a b"), "may only contain"),
        (_with(identity_public_key="zz" * 32), "identity_public_key is not valid hex"),
        (_with(identity_public_key="11" * 31), "identity_public_key must be 32 bytes, got 31"),
        (_with(certificate_sha256=5), "certificate_sha256 must be a hex string"),
        (_with(certificate_sha256="22" * 20), "certificate_sha256 must be 32 bytes, got 20"),
        ({"version": 1, "clients": [_good_entry(), _good_entry()]}, "appears twice"),
    ],
)
def test_roster_rejects_each_malformed_field(tmp_path: Path, data: Any, message: str) -> None:
    path = tmp_path / "roster.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=message):
        Roster.load(path)


def test_roster_rejects_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no roster"):
        Roster.load(tmp_path / "absent.json")
    (tmp_path / "r.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Roster.load(tmp_path / "r.json")


def test_authorize_both_directions(ca: CertificateAuthority) -> None:
    issued = issue_client_certificate(ca, "alice")
    enrolled = EnrolledClient("alice", SigningIdentity.generate().verifying(), issued.sha256())
    roster = Roster([enrolled])
    assert roster.authorize("alice", issued.cert_der()) == enrolled
    for cn, der in ((None, issued.cert_der()), ("alice", None), ("alice", b"")):
        with pytest.raises(UnauthenticatedError) as exc:
            roster.authorize(cn, der)
        assert exc.value.grpc_status == "UNAUTHENTICATED"
    reissued = issue_client_certificate(ca, "alice")  # same CA, same name, not the pinned one
    with pytest.raises(UnauthenticatedError, match="not the one it enrolled with"):
        roster.authorize("alice", reissued.cert_der())
    mallory = issue_client_certificate(ca, "mallory")
    with pytest.raises(UnknownClientError, match="not enrolled") as denied:
        roster.authorize("mallory", mallory.cert_der())
    assert denied.value.grpc_status == "PERMISSION_DENIED"


# --- command line ---------------------------------------------------------------------


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fedveil")
    keys_command.add_parser(parser.add_subparsers(dest="command", required=True))
    return keys_command.run(parser.parse_args(argv))


def test_keys_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """init (CA and server folders apart), request per client, enrol, show, revoke."""
    ca, srv = str(tmp_path / "ca"), str(tmp_path / "server")
    assert _run(["keys", "init", "--ca-dir", ca, "--server-dir", srv, "--hosts", "localhost"]) == 0
    for cid in ("a", "b", "c"):
        folder = str(tmp_path / cid)
        assert _run(["keys", "request", "--client-id", cid, "--dir", folder]) == 0
        request = f"{folder}/request.json"
        assert _run(["keys", "enrol", request, "--ca-dir", ca, "--server-dir", srv]) == 0
    capsys.readouterr()
    assert _run(["keys", "show", "--server-dir", srv]) == 0
    shown = capsys.readouterr().out
    roster = load_roster(srv)
    for cid in ("a", "b", "c"):
        assert cid in shown and roster[cid].certificate_sha256.hex() in shown
    assert f"roster SHA-256 {roster.sha256().hex()}" in shown
    assert _run(["keys", "init", "--ca-dir", ca, "--server-dir", srv, "--hosts", "x"]) == 2
    assert "already exists" in capsys.readouterr().err
    again = f"{tmp_path / 'c'}/request.json"
    assert _run(["keys", "enrol", again, "--ca-dir", ca, "--server-dir", srv]) == 2
    assert "already enrolled" in capsys.readouterr().err
    assert _run(["keys", "revoke", "c", "--server-dir", srv]) == 0
    assert "c" not in load_roster(srv)
    assert _run(["keys", "revoke", "c", "--server-dir", srv]) == 2
    assert "not on the roster" in capsys.readouterr().err
    assert (
        _run(["keys", "init", "--ca-dir", ca, "--server-dir", srv, "--hosts", "", "--force"]) == 2
    )
    assert "hostname" in capsys.readouterr().err
    assert _run(["keys", "show", "--server-dir", str(tmp_path / "none")]) == 2


# --- real mutual TLS on loopback ------------------------------------------------------


@dataclass
class TlsServer:
    port: int
    roster: Roster
    seen: list[dict[str, list[bytes]]]


def _serve(
    key_pem: bytes, cert_pem: bytes, ca_pem: bytes, roster: Roster
) -> Generator[TlsServer, None, None]:
    state = TlsServer(0, roster, [])

    def whoami(request: bytes, context: grpc.ServicerContext) -> bytes:
        auth = context.auth_context()
        state.seen.append(dict(auth))
        return b"".join(auth.get("x509_common_name", []))

    def authorized(request: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            return state.roster.authorize_peer(context.auth_context()).client_id.encode()
        except FedveilError as exc:
            context.abort(grpc.StatusCode[exc.grpc_status], str(exc))
            raise AssertionError("abort returned") from exc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "test.Pki",
                {
                    "WhoAmI": grpc.unary_unary_rpc_method_handler(whoami),
                    "Authorized": grpc.unary_unary_rpc_method_handler(authorized),
                },
            )
        ]
    )
    creds = grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=ca_pem, require_client_auth=True
    )
    state.port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    try:
        yield state
    finally:
        server.stop(None)


@pytest.fixture(scope="module")
def tls_server(keys_dir: Path) -> Iterator[TlsServer]:
    key_pem, cert_pem, ca_pem = load_server_credentials(keys_dir)
    yield from _serve(key_pem, cert_pem, ca_pem, load_roster(keys_dir))


def _call(
    port: int,
    creds: grpc.ChannelCredentials,
    method: str = "WhoAmI",
    host: str = "127.0.0.1",
    options: Callable[[], list[tuple[str, Any]]] = list,
) -> bytes:
    with grpc.secure_channel(f"{host}:{port}", creds, options=options()) as channel:
        result: bytes = channel.unary_unary(f"/test.Pki/{method}")(b"", timeout=5)
        return result


def _status(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as exc:
        call()
    code: grpc.StatusCode = exc.value.code()
    return code


def test_mtls_enrolled_client_is_seen_by_its_cn(tls_server: TlsServer, keys_dir: Path) -> None:
    creds = ClientCredentials.load(client_dir(keys_dir, "alice"))
    for host in ("127.0.0.1", "localhost"):  # IP SAN and DNS SAN both verify
        assert _call(tls_server.port, creds.channel_credentials(), host=host) == b"alice"
    auth = tls_server.seen[-1]
    assert auth["x509_common_name"] == [b"alice"]  # bytes, inside a list
    assert auth["x509_pem_cert"][0] == creds.cert_pem  # PEM, not DER
    assert auth["x509_subject_alternative_name"] == [b"fedveil:client:alice"]
    assert auth["transport_security_type"] == [b"ssl"]
    assert _call(tls_server.port, creds.channel_credentials(), "Authorized") == b"alice"


def test_mtls_rejects_clients_without_a_valid_certificate(
    tls_server: TlsServer, keys_dir: Path, other_ca: CertificateAuthority
) -> None:
    ca_pem = (keys_dir / "ca.pem").read_bytes()
    no_cert = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    assert _status(lambda: _call(tls_server.port, no_cert)) == grpc.StatusCode.UNAVAILABLE
    stranger = issue_client_certificate(other_ca, "alice")  # right name, wrong CA
    foreign = grpc.ssl_channel_credentials(ca_pem, stranger.key_pem(), stranger.cert_pem())
    assert _status(lambda: _call(tls_server.port, foreign)) == grpc.StatusCode.UNAVAILABLE
    alice = ClientCredentials.load(client_dir(keys_dir, "alice"))
    distrustful = grpc.ssl_channel_credentials(other_ca.cert_pem(), alice.key_pem, alice.cert_pem)
    assert _status(lambda: _call(tls_server.port, distrustful)) == grpc.StatusCode.UNAVAILABLE


def test_roster_decides_after_the_handshake(
    tls_server: TlsServer, keys_dir: Path, ca: CertificateAuthority
) -> None:
    ca_pem = ca.cert_pem()
    mallory = issue_client_certificate(ca, "mallory")  # chains, but never enrolled
    creds = grpc.ssl_channel_credentials(ca_pem, mallory.key_pem(), mallory.cert_pem())
    assert _call(tls_server.port, creds) == b"mallory"  # TLS alone lets it in...
    denied = _status(lambda: _call(tls_server.port, creds, "Authorized"))
    assert denied == grpc.StatusCode.PERMISSION_DENIED  # ...the roster does not
    twin = issue_client_certificate(ca, "bob")  # a second certificate for an enrolled id
    creds = grpc.ssl_channel_credentials(ca_pem, twin.key_pem(), twin.cert_pem())
    assert _status(lambda: _call(tls_server.port, creds, "Authorized")) == (
        grpc.StatusCode.UNAUTHENTICATED
    )


def test_server_certificate_for_another_host_is_refused(
    ca: CertificateAuthority, keys_dir: Path
) -> None:
    wrong = issue_server_certificate(ca, ["aggregator.example"])
    alice = ClientCredentials.load(client_dir(keys_dir, "alice"))
    served = _serve(wrong.key_pem(), wrong.cert_pem(), ca.cert_pem(), load_roster(keys_dir))
    state = next(served)
    try:
        code = _status(lambda: _call(state.port, alice.channel_credentials()))
        assert code == grpc.StatusCode.UNAVAILABLE
        # Only an explicit override of the expected name makes the same server acceptable.
        override = [("grpc.ssl_target_name_override", "aggregator.example")]
        assert _call(state.port, alice.channel_credentials(), options=lambda: override) == (
            b"alice"
        )
    finally:
        served.close()
