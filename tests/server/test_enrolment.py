"""Enrolment without a dealer (issue 15): attacker first.

1. A server handed the operator's whole folder (the old README: `fedveil server
   --keys-dir keys`, beside ca.key and every client's keys) refuses to start, as a real
   process: exit 2, one line, before it binds a port or writes a file.
2. The dealer-server attack: with the old layout, the keys the server can read include
   every client's Ed25519 identity, and a key advertisement it substitutes and signs with
   one of them is accepted by an honest client (as is a survivor set it signs). With the
   new layout nothing the server can read signs for any client, so the same attack is
   refused.
3. Enrolment, revocation and re-enrolment over mutual TLS with a real server: a revoked
   client is refused from the next round on, a re-enrolled one takes part with its new
   keys while its old certificate stays refused.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import hashlib
import json
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import grpc
import numpy as np
import pytest
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedveil.cli import main
from fedveil.clients.credentials import ClientCredentials
from fedveil.clients.enrolment import request_enrolment
from fedveil.clients.roster_file import load_roster_identities
from fedveil.clients.transport import AsyncAggregationClient, TransportSecurity
from fedveil.errors import ConfigError, InvalidSignatureError, KeySubstitutionError
from fedveil.proto import aggregation_pb2 as pb
from fedveil.proto import aggregation_pb2_grpc as pb_grpc
from fedveil.runners.simulation import Federation
from fedveil.secagg.crypto.identity import (
    SigningIdentity,
    VerifyingIdentity,
    advertisement_message,
    survivor_set_message,
)
from fedveil.secagg.enrolment import EnrolmentRequest
from fedveil.secagg.protocol.client import ClientSession, raw_public
from fedveil.secagg.protocol.config import ClientPolicy
from fedveil.secagg.protocol.messages import ShareKeysRequest, ShareKeysResponse
from fedveil.secagg.protocol.model_chain import ModelChain
from fedveil.secagg.protocol.server import ServerRound
from fedveil.secagg.protocol.stages import Stage
from fedveil.server.keys_store import (
    check_server_folders,
    client_dir,
    enrol_request,
    init_federation,
    init_keys,
    load_roster,
)
from tests.helpers.harness import LiveRound, make_round_config
from tests.helpers.network import free_port
from tests.helpers.service_harness import BASE_MODEL_HASH, running_server, settings_for

HOSTS = ["localhost", "127.0.0.1"]
IDS = ["org-a", "org-b", "org-c", "org-d", "org-e"]
MODEL_HASH_HEX = BASE_MODEL_HASH.hex()


def _cli(argv: list[str]) -> int:
    return main(argv)


def dealer_free(root: Path, ids: Iterable[str]) -> tuple[Path, Path, dict[str, Path]]:
    """The new flow through the CLI: init, one `keys request` per client in its own
    folder, `keys enrol` by the operator. Returns (CA folder, server folder, clients)."""
    ca, server = root / "operator" / "ca", root / "operator" / "server"
    assert (
        _cli(
            [
                "keys",
                "init",
                "--ca-dir",
                str(ca),
                "--server-dir",
                str(server),
                "--hosts",
                ",".join(HOSTS),
            ]
        )
        == 0
    )
    folders: dict[str, Path] = {}
    for cid in ids:
        folder = root / "orgs" / cid
        assert _cli(["keys", "request", "--client-id", cid, "--dir", str(folder)]) == 0
        request = str(folder / "request.json")
        assert (
            _cli(["keys", "enrol", request, "--ca-dir", str(ca), "--server-dir", str(server)]) == 0
        )
        folders[cid] = folder
    return ca, server, folders


# --- what a server can read -----------------------------------------------------------


def readable_private_keys(folders: Iterable[Path]) -> list[object]:
    """Every private key in a readable file under `folders`: the attacker's key ring."""
    found: list[object] = []
    for folder in folders:
        for dirpath, _, names in os.walk(folder):
            for name in names:
                try:
                    data = (Path(dirpath) / name).read_bytes()
                except OSError:
                    continue
                if b"PRIVATE KEY-----" not in data:
                    continue
                try:
                    found.append(serialization.load_pem_private_key(data, password=None))
                except (ValueError, TypeError, UnsupportedAlgorithm):
                    continue
    return found


def signing_keys_for(
    roster: dict[str, VerifyingIdentity], folders: Iterable[Path]
) -> dict[str, SigningIdentity]:
    """The enrolled identities the server can sign as, keyed by client id."""
    ring = [
        SigningIdentity(key)
        for key in readable_private_keys(folders)
        if isinstance(key, Ed25519PrivateKey)
    ]
    by_public = {ident.verifying(): ident for ident in ring}
    return {cid: by_public[pub] for cid, pub in roster.items() if pub in by_public}


def live_round(identities: dict[str, SigningIdentity]) -> LiveRound:
    """An honest round among clients holding these (real, on-disk) identities."""
    federation = Federation(identities)
    config = make_round_config(federation)
    roster = federation.roster
    policy = ClientPolicy(min_cohort=2, min_threshold=2)
    clients = {
        cid: ClientSession(config, cid, identities[cid], roster, policy) for cid in config.roster
    }
    live = LiveRound(federation, config, ServerRound(config, roster), clients)
    rng = np.random.default_rng(0)
    for cid, client in clients.items():
        live.inputs[cid] = rng.uniform(-1, 1, config.dimension).astype(np.float32)
        live.weights[cid] = 10
        client.set_input(live.inputs[cid], live.weights[cid])
    return live


def substitute(
    live: LiveRound, victim: str, signer: SigningIdentity
) -> tuple[ShareKeysRequest, str]:
    """The server swaps the first neighbour's encryption key for its own and signs the
    advertisement with `signer`."""
    request = live.server.request_for(victim)
    assert isinstance(request, ShareKeysRequest)
    target = request.advertisements[0]
    server_key = raw_public(X25519PrivateKey.generate())
    signature = signer.sign(
        advertisement_message(
            live.config.session_id,
            target.client_id,
            server_key,
            target.masking_key,
            target.self_mask_commitment,
        )
    )
    forged = dataclasses.replace(target, encryption_key=server_key, signature=signature)
    return ShareKeysRequest((forged, *request.advertisements[1:])), target.client_id


# --- 2. the dealer-server attack, then the same attack against the new layout ----------


def test_dealer_layout_lets_the_server_forge_any_client(tmp_path: Path) -> None:
    """The attack: the old README gave the server the operator's folder, which holds
    every client's identity key. A substituted advertisement signed with the neighbour's
    own key passes the victim's check, and survivor-set signatures verify for everyone."""
    keys = tmp_path / "keys"
    init_keys(keys, HOSTS, IDS)
    identities = {cid: ClientCredentials.load(client_dir(keys, cid)).identity for cid in IDS}
    roster = load_roster(keys).identities()
    stolen = signing_keys_for(roster, [keys])  # all the server process can read
    assert set(stolen) == set(IDS)
    live = live_round(identities).run_to(Stage.SHARE_KEYS)
    victim = IDS[0]
    request = live.server.request_for(victim)
    assert isinstance(request, ShareKeysRequest)
    neighbour = request.advertisements[0].client_id  # the one `substitute` impersonates
    forged, target = substitute(live, victim, stolen[neighbour])
    assert target == neighbour
    reply = live.clients[victim].handle(forged)  # accepted: the victim is fooled
    assert isinstance(reply, ShareKeysResponse)
    assert live.clients[victim].stage is not Stage.FAILED
    assert target in {share.recipient for share in reply.shares}
    message = survivor_set_message(live.config.session_id, IDS[:3])
    for cid in IDS:
        roster[cid].verify(stolen[cid].sign(message), message)  # a forged quorum
    with pytest.raises(ConfigError, match=r"refusing to start: .*ca\.key"):
        check_server_folders(keys)


def test_server_with_only_its_folder_cannot_sign_for_any_client(tmp_path: Path) -> None:
    """The same server with the dealer-free layout: no key it can read signs for any
    enrolled client, so its best forgery (any key it holds, or a fresh identity) is
    refused by the victim, and no survivor signature it makes verifies."""
    _, server, folders = dealer_free(tmp_path, IDS)
    check_server_folders(server, tmp_path / "state")  # it may start
    roster = load_roster_identities(server / "roster.json", load_roster(server).sha256())
    ring = readable_private_keys([server])
    assert len(ring) == 1 and isinstance(ring[0], ec.EllipticCurvePrivateKey)  # its TLS key
    assert signing_keys_for(roster, [server]) == {}
    identities = {cid: ClientCredentials.load(folders[cid]).identity for cid in IDS}
    assert {cid: ident.verifying() for cid, ident in identities.items()} == roster
    live = live_round(identities).run_to(Stage.SHARE_KEYS)
    victim = IDS[0]
    forged, _ = substitute(live, victim, SigningIdentity.generate())
    with pytest.raises(KeySubstitutionError, match="not signed by its enrolled identity"):
        live.clients[victim].handle(forged)
    message = survivor_set_message(live.config.session_id, IDS[:3])
    with pytest.raises(InvalidSignatureError):
        roster[IDS[1]].verify(SigningIdentity.generate().sign(message), message)


def test_request_keys_stay_private_and_the_request_is_public(tmp_path: Path) -> None:
    _, server, folders = dealer_free(tmp_path, IDS[:1])
    folder = folders[IDS[0]]
    for name in ("client.key", "identity.key"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    document = (folder / "request.json").read_text()
    assert "PRIVATE" not in document and set(json.loads(document)) >= {"csr", "client_id"}
    credentials = ClientCredentials.load(folder)  # the operator's client.pem completes it
    assert credentials.client_id == IDS[0]
    assert load_roster(server)[IDS[0]].identity == credentials.identity.verifying()
    for path in server.rglob("*"):  # nothing of the client's secrets reached the operator
        assert path.read_bytes() != (folder / "identity.key").read_bytes()


def test_tampered_requests_are_refused(tmp_path: Path) -> None:
    ca, server = tmp_path / "ca", tmp_path / "server"
    init_federation(ca, server, HOSTS)
    honest = request_enrolment(tmp_path / "honest", "honest")
    data = honest.to_json()

    def enrol(doc: dict[str, object], name: str) -> None:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(doc))
        enrol_request(path, ca, server, tmp_path / name)

    # Another organisation's identity under the attacker's own id and TLS key.
    mallory = EnrolmentRequest.create(
        "mallory", ec.generate_private_key(ec.SECP256R1()), SigningIdentity.generate()
    ).to_json()
    stolen = {**mallory, "identity_public_key": data["identity_public_key"]}
    with pytest.raises(InvalidSignatureError):
        enrol(stolen, "stolen")
    renamed = {**data, "client_id": "mallory"}
    with pytest.raises(ConfigError, match="CSR for another name"):
        enrol(renamed, "renamed")
    with pytest.raises(ConfigError, match="unknown fields"):
        enrol({**data, "pickle": "x"}, "extra")
    assert len(load_roster(server)) == 0
    enrol(data, "honest")  # client.pem and ca.pem land in the organisation's folder
    with pytest.raises(ConfigError, match="already enrolled"):
        enrol(data, "twice")
    # The same organisation asking for a second id with the same identity (a sybil).
    same_identity = ClientCredentials.load(tmp_path / "honest").identity
    twin = EnrolmentRequest.create("twin", ec.generate_private_key(ec.SECP256R1()), same_identity)
    with pytest.raises(ConfigError, match="identity key is already enrolled"):
        enrol(twin.to_json(), "twin")
    with pytest.raises(ConfigError, match="must be apart"):
        init_federation(tmp_path / "op", tmp_path / "op" / "server", HOSTS)


def test_client_refuses_a_roster_with_another_fingerprint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server (or whoever relays roster.json) adds a sybil: the pin catches it."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    _, server, folders = dealer_free(tmp_path, IDS[:3])
    pinned = load_roster(server).sha256().hex()
    sybil = request_enrolment(tmp_path / "sybil", "sybil")
    document = json.loads((server / "roster.json").read_text())
    document["clients"].append(
        {
            "client_id": "sybil",
            "identity_public_key": sybil.identity.public_bytes.hex(),
            "certificate_sha256": "00" * 32,
        }
    )
    relayed = tmp_path / "relayed-roster.json"
    relayed.write_text(json.dumps(document))
    np.save(tmp_path / "u.npy", np.zeros(8, dtype=np.float32))
    argv = [
        "client",
        "--server",
        "127.0.0.1:1",
        "--credentials",
        str(folders[IDS[0]]),
        "--update",
        str(tmp_path / "u.npy"),
        "--weight",
        "3",
        "--model-hash",
        MODEL_HASH_HEX,
        "--roster-sha256",
        pinned,
        "--roster",
    ]
    assert main([*argv, str(relayed)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"not the {pinned}" in err, err
    assert main([*argv[:-3], "--roster-sha256", "xyz", "--roster", str(relayed)]) == 2
    assert "64 hex digits" in capsys.readouterr().err


# --- 1. the server process refuses a folder with keys that are not its own -------------


def _server_argv(keys: Path, state: Path, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fedveil.cli",
        "server",
        "--keys-dir",
        str(keys),
        "--state-dir",
        str(state),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dimension",
        "16",
        "--min-cohort",
        "3",
        "--model-hash",
        MODEL_HASH_HEX,
    ]


def _layout(tmp_path: Path, case: str) -> tuple[Path, str]:
    """A folder to give the server, and the file its refusal must name."""
    if case == "dealer-folder":
        keys = tmp_path / "keys"
        init_keys(keys, HOSTS, IDS[:3])
        return keys, "ca.key"
    _, server, folders = dealer_free(tmp_path, IDS[:3])
    if case == "operator-folder":
        return server.parent, "ca.key"  # operator/ holds ca/ beside server/
    leaked = server / "backup" / "org-b-identity.pem"
    leaked.parent.mkdir()
    leaked.write_bytes((folders["org-b"] / "identity.key").read_bytes())
    return server, "org-b-identity.pem"


@pytest.mark.parametrize("case", ["dealer-folder", "operator-folder", "client-key-copied"])
def test_server_process_refuses_folders_with_foreign_private_keys(
    tmp_path: Path, case: str
) -> None:
    keys, culprit = _layout(tmp_path, case)
    state = tmp_path / "state"
    port = free_port()
    done = subprocess.run(
        _server_argv(keys, state, port),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: refusing to start: ") and culprit in lines[0]
    assert "Traceback" not in done.stderr and "listening" not in done.stdout
    assert not state.exists()  # refused before start_server made its state folder


def test_server_process_starts_on_its_own_folder(tmp_path: Path) -> None:
    """The control: the server's own key pair in its folder is not refused."""
    _, server, _ = dealer_free(tmp_path, IDS[:3])
    proc = subprocess.Popen(
        _server_argv(server, tmp_path / "state", 0),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "fedveil server listening on 127.0.0.1:" in line, proc.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --- 3. enrolment, revocation and re-enrolment over mutual TLS --------------------------

ROUND_IDS = ["org-a", "org-b", "org-c", "org-d"]
DIM = 64


def _client(
    server_dir: Path,
    folder: Path,
    port: int,
    roster_sha256: bytes,
    chain: ModelChain | None = None,
) -> AsyncAggregationClient:
    credentials = ClientCredentials.load(folder)
    roster = load_roster_identities(server_dir / "roster.json", roster_sha256)
    return AsyncAggregationClient(
        f"localhost:{port}",
        credentials.client_id,
        credentials.identity,
        roster,
        TransportSecurity.from_credentials(credentials),
        policy=ClientPolicy(min_cohort=3, min_threshold=2),
        base_model_hash=BASE_MODEL_HASH,
        model_chain=copy.deepcopy(chain),  # each client advances its own
    )


async def _round(clients: dict[str, AsyncAggregationClient], rng: np.random.Generator) -> set[str]:
    updates = {cid: rng.uniform(-0.5, 0.5, DIM).astype(np.float32) for cid in clients}
    results = await asyncio.gather(*(c.run_round(updates[cid], 5) for cid, c in clients.items()))
    expected = np.mean([updates[cid].astype(np.float64) for cid in clients], axis=0)
    for result in results:
        assert np.max(np.abs(result.weighted_mean - expected)) <= result.error_bound
    return set(results[0].survivors)


async def _status_of(folder: Path, port: int) -> grpc.StatusCode:
    """What the server answers a GetRound from the client whose keys are in `folder`."""
    credentials = ClientCredentials.load(folder)
    channel = grpc.aio.secure_channel(f"localhost:{port}", credentials.channel_credentials())
    try:
        await pb_grpc.AggregationStub(channel).GetRound(
            pb.GetRoundRequest(client_id=credentials.client_id), timeout=10
        )
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    finally:
        await channel.close()
    return grpc.StatusCode.OK


def test_enrol_revoke_and_re_enrol_over_mutual_tls(tmp_path: Path) -> None:
    """Revocation takes effect at the next round the server opens (it re-reads the
    roster then); re-enrolment is a new request with fresh keys, and the old certificate,
    which still chains to the CA, stays refused because the roster pins the new one."""
    ca, server_dir, folders = dealer_free(tmp_path, ROUND_IDS)
    # 3 s stages: round 2 waits that long for the revoked org-d at key advertisement.
    settings = settings_for(tmp_path, server_dir, dimension=DIM, stage_timeout_s=3.0)
    rng = np.random.default_rng(15)
    d = folders["org-d"]

    async def scenario() -> None:
        async with running_server(settings) as server:
            port = server.port
            pin = load_roster(server_dir).sha256()
            clients = {cid: _client(server_dir, folders[cid], port, pin) for cid in ROUND_IDS}
            assert await _round(clients, rng) == set(ROUND_IDS)  # round 1, enrolled clients
            await clients.pop("org-d").close()
            # Round 2 is already open with org-d on its roster: the revocation applies
            # from the next round on, so org-d is still answered now (and stays away).
            assert _cli(["keys", "revoke", "org-d", "--server-dir", str(server_dir)]) == 0
            assert await _status_of(d, port) == grpc.StatusCode.OK
            assert await _round(clients, rng) == {"org-a", "org-b", "org-c"}
            # Round 3 opened after the revocation: org-d's certificate is refused.
            assert await _status_of(d, port) == grpc.StatusCode.PERMISSION_DENIED
            # org-d re-enrols with fresh keys (its own new request).
            old = tmp_path / "org-d-old"
            old.mkdir()
            for name in ("client.pem", "client.key", "identity.key", "ca.pem"):
                (old / name).write_bytes((d / name).read_bytes())
            assert _cli(["keys", "request", "--client-id", "org-d", "--dir", str(d)]) == 2
            request = ["keys", "request", "--client-id", "org-d", "--force"]
            assert _cli([*request, "--dir", str(d)]) == 0
            assert not (d / "client.pem").exists()  # it certified the old key
            enrol = ["keys", "enrol", str(d / "request.json")]
            assert _cli([*enrol, "--ca-dir", str(ca), "--server-dir", str(server_dir)]) == 0
            new_pin = load_roster(server_dir).sha256()
            with pytest.raises(ConfigError, match="SHA-256"):
                load_roster_identities(server_dir / "roster.json", pin)  # the old pin
            # Not before the next round opens: round 3 runs with the roster it opened with.
            assert await _status_of(d, port) == grpc.StatusCode.PERMISSION_DENIED
            assert await _round(clients, rng) == {"org-a", "org-b", "org-c"}
            chain = clients["org-a"].model_chain
            for client in clients.values():
                await client.close()
            # Round 4 opened after the re-enrolment: the old certificate is no longer the
            # pinned one; the new one takes part, with the rounds' chain it was given.
            assert await _status_of(old, port) == grpc.StatusCode.UNAUTHENTICATED
            assert await _status_of(d, port) == grpc.StatusCode.OK
            fresh = {
                cid: _client(server_dir, folders[cid], port, new_pin, chain) for cid in ROUND_IDS
            }
            assert await _round(fresh, rng) == set(ROUND_IDS)
            for client in fresh.values():
                await client.close()

    asyncio.run(scenario())


def test_fingerprints_are_stable_over_formatting(tmp_path: Path) -> None:
    _, server, _ = dealer_free(tmp_path, IDS[:2])
    pin = load_roster(server).sha256()
    path = server / "roster.json"
    path.write_text(json.dumps(json.loads(path.read_text()), indent=7))
    assert load_roster_identities(path, pin)
    digest = hashlib.sha256(path.read_bytes()).digest()
    assert digest != pin  # the pin is over the entries, not the bytes


def test_a_roster_that_no_longer_fits_stops_new_rounds(tmp_path: Path) -> None:
    """Fail closed: revoking below min_cohort (or a broken roster file) opens no further
    round, rather than keep running on the roster the operator replaced."""
    _, server_dir, folders = dealer_free(tmp_path, ROUND_IDS[:3])
    settings = settings_for(tmp_path, server_dir, dimension=DIM, stage_timeout_s=5.0)
    rng = np.random.default_rng(3)

    async def scenario() -> None:
        async with running_server(settings) as server:
            pin = load_roster(server_dir).sha256()
            clients = {
                cid: _client(server_dir, folders[cid], server.port, pin) for cid in ROUND_IDS[:3]
            }
            assert _cli(["keys", "revoke", "org-c", "--server-dir", str(server_dir)]) == 0
            assert await _round(clients, rng) == set(ROUND_IDS[:3])  # opened before
            for client in clients.values():
                await client.close()
            await asyncio.wait_for(server.coordinator.finished.wait(), timeout=10)
            assert server.coordinator.current is None

    asyncio.run(scenario())
