"""`fedveil status` against a real server over mutual TLS, and the attacks on who may ask.

The status names the federation's parties and who is late: only a certificate from
`fedveil keys operator`, pinned in the server folder, gets an answer. Attacked here: an
enrolled party asking with its own certificate (PERMISSION_DENIED), the same party
renaming its files to look like an operator's folder (PERMISSION_DENIED: the role is in
the certificate, not the file name), an operator certificate from another CA (refused by
the mutual-TLS handshake), and a revoked operator (refused at the next call). Each next
to the control that the operator's own certificate is answered.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.descriptor import FieldDescriptor

from fedveil.cli import main
from fedveil.proto import aggregation_pb2 as pb
from fedveil.proto import aggregation_pb2_grpc as pb_grpc
from fedveil.server.keys_store import client_dir
from fedveil.server.operators import (
    OPERATOR_CA,
    OPERATOR_CERT,
    OPERATOR_KEY,
    issue_operator,
    revoke_operator,
)
from tests.helpers.service_harness import client_for, make_keys, running_server, settings_for

D = 2000


def operator_folder(keys: Path, root: Path, name: str = "ops") -> Path:
    """The dealer test layout keeps the CA in the keys folder; the operator's is apart."""
    out = root / f"operator-{name}"
    issue_operator(keys, keys, name, out)
    return out


def channel_for(folder: Path, port: int, cert: str, key: str, ca: str) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(folder / ca).read_bytes(),
        private_key=(folder / key).read_bytes(),
        certificate_chain=(folder / cert).read_bytes(),
    )
    return grpc.aio.secure_channel(f"localhost:{port}", credentials)


async def ask(channel: grpc.aio.Channel) -> pb.ServerStatus | grpc.StatusCode:
    """GetStatus over `channel`: the answer, or the status it was refused with."""
    try:
        reply: pb.ServerStatus = await pb_grpc.OperationsStub(channel).GetStatus(
            pb.StatusRequest(), timeout=10
        )
        return reply
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    finally:
        await channel.close()


async def cli(*argv: str) -> int:
    """`fedveil ...` in a thread: the blocking gRPC call must not stall the server's loop."""
    return await asyncio.to_thread(main, list(argv))


def test_status_reports_a_round_in_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys, ids = make_keys(tmp_path, 3)
    ops = operator_folder(keys, tmp_path)
    settings = settings_for(tmp_path, keys, dimension=D, rounds=1, stage_timeout_s=30.0)

    async def scenario() -> tuple[dict[str, Any], str, pb.ServerStatus]:
        async with running_server(settings) as running:
            address = f"localhost:{running.port}"
            clients = [client_for(keys, c, running.port) for c in ids]
            early = [
                asyncio.ensure_future(cl.run_round(np.zeros(D, np.float32), 2))
                for cl in clients[:2]
            ]
            active = running.coordinator.current
            assert active is not None
            for _ in range(200):  # two advertisements in, the third missing: mid-stage
                if len(active.server.expected_senders()) == 1:
                    break
                await asyncio.sleep(0.05)
            capsys.readouterr()
            assert (
                await cli("status", "--server", address, "--credentials", str(ops), "--json") == 0
            )
            data = json.loads(capsys.readouterr().out)
            assert await cli("status", "--server", address, "--credentials", str(ops)) == 0
            text = capsys.readouterr().out
            raw = await ask(
                channel_for(ops, running.port, OPERATOR_CERT, OPERATOR_KEY, OPERATOR_CA)
            )
            assert isinstance(raw, pb.ServerStatus)
            last = asyncio.ensure_future(clients[2].run_round(np.zeros(D, np.float32), 2))
            await asyncio.gather(*early, last)
            for cl in clients:
                await cl.close()
        return data, text, raw

    data, text, raw = asyncio.run(scenario())
    current = data["round"]
    assert current["round_id"] == raw.round_id >= 1
    assert current["stage"] == "advertise_keys"
    assert (current["arrived_clients"], current["expected_clients"]) == (2, 3)
    assert current["missing_clients"] == ["org-02"]
    assert current["stage_deadline"] - current["stage_opened_at"] == pytest.approx(30.0)
    assert set(data["connected_clients"]) == {"org-00", "org-01"}  # their long polls
    assert data["mode"] == "secagg" and data["enrolled_clients"] == 3
    assert data["last_failure"] is None
    assert "2 of 3 clients arrived" in text and "waiting for: org-02" in text
    assert f"round {current['round_id']} (secagg): stage advertise_keys" in text


def test_status_carries_no_secret_field() -> None:
    """The message has no bytes field (no vector, share, key, signature or digest); a
    bytes field added later fails here and must be argued for."""
    fields = pb.ServerStatus.DESCRIPTOR.fields
    assert fields, "ServerStatus has no fields"
    assert [f.name for f in fields if f.type == FieldDescriptor.TYPE_BYTES] == []
    assert [f.name for f in fields if f.type == FieldDescriptor.TYPE_MESSAGE] == []


def test_the_last_failure_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys, ids = make_keys(tmp_path, 3)
    ops = operator_folder(keys, tmp_path)
    settings = settings_for(tmp_path, keys, dimension=D, rounds=2, stage_timeout_s=1.0)

    async def status_json(port: int) -> dict[str, Any]:
        capsys.readouterr()
        address = f"localhost:{port}"
        assert await cli("status", "--server", address, "--credentials", str(ops), "--json") == 0
        return dict(json.loads(capsys.readouterr().out))

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        async with running_server(settings) as running:
            fresh = await status_json(running.port)
            lone = client_for(keys, ids[0], running.port)
            with pytest.raises(Exception):  # noqa: B017 - the SDK's failure, any class
                await lone.run_round(np.zeros(D, np.float32), 1)
            await lone.close()
            failed = await status_json(running.port)
        async with running_server(settings) as restarted:  # the same journal
            return fresh, failed, await status_json(restarted.port)

    fresh, data, after_restart = asyncio.run(scenario())
    assert fresh["last_failure"] is None
    failure = data["last_failure"]
    assert failure is not None and failure["stage"] == "advertise_keys"
    assert "only 1" in failure["reason"] and "quorum" in failure["reason"]  # 1 of 3 came
    assert data["round"]["round_id"] == failure["round_id"] + 1  # the next round is open
    remembered = after_restart["last_failure"]
    assert remembered is not None
    assert (remembered["round_id"], remembered["reason"]) == (
        failure["round_id"],
        failure["reason"],
    )


def test_a_party_certificate_is_refused_and_the_operators_is_answered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys, _ = make_keys(tmp_path, 3)
    ops = operator_folder(keys, tmp_path)
    party = client_dir(keys, "org-00")
    disguised = tmp_path / "disguised"  # a party's files under an operator's file names
    disguised.mkdir()
    shutil.copy(party / "client.pem", disguised / OPERATOR_CERT)
    shutil.copy(party / "client.key", disguised / OPERATOR_KEY)
    shutil.copy(party / "ca.pem", disguised / OPERATOR_CA)

    async def scenario() -> tuple[object, object, int, int]:
        async with running_server(settings_for(tmp_path, keys)) as running:
            port = running.port
            as_party = await ask(channel_for(party, port, "client.pem", "client.key", "ca.pem"))
            as_operator = await ask(
                channel_for(ops, port, OPERATOR_CERT, OPERATOR_KEY, OPERATOR_CA)
            )
            address = f"localhost:{port}"
            capsys.readouterr()
            refused = await cli("status", "--server", address, "--credentials", str(disguised))
            answered = await cli("status", "--server", address, "--credentials", str(ops))
        return as_party, as_operator, refused, answered

    as_party, as_operator, refused, answered = asyncio.run(scenario())
    assert as_party is grpc.StatusCode.PERMISSION_DENIED
    assert isinstance(as_operator, pb.ServerStatus) and as_operator.round_open
    assert (refused, answered) == (1, 0)
    err = capsys.readouterr().err
    assert "PERMISSION_DENIED" in err and "party's, not an operator's" in err
    assert len(err.strip().splitlines()) == 1


def test_an_operator_of_another_ca_fails_the_handshake(tmp_path: Path) -> None:
    keys, _ = make_keys(tmp_path, 3)
    ops = operator_folder(keys, tmp_path)
    other_keys, _ = make_keys(tmp_path / "other", 3)
    foreign = operator_folder(other_keys, tmp_path / "other")
    # the foreign operator trusts the real server's CA, so only the server's check is tested
    shutil.copy(ops / OPERATOR_CA, foreign / "real-ca.pem")

    async def scenario() -> tuple[object, object]:
        async with running_server(settings_for(tmp_path, keys)) as running:
            port = running.port
            foreign_answer = await ask(
                channel_for(foreign, port, OPERATOR_CERT, OPERATOR_KEY, "real-ca.pem")
            )
            own = await ask(channel_for(ops, port, OPERATOR_CERT, OPERATOR_KEY, OPERATOR_CA))
        return foreign_answer, own

    foreign_answer, own = asyncio.run(scenario())
    assert foreign_answer is grpc.StatusCode.UNAVAILABLE  # no TLS session at all
    assert isinstance(own, pb.ServerStatus)


def test_a_revoked_or_reissued_operator_is_refused_at_once(tmp_path: Path) -> None:
    keys, _ = make_keys(tmp_path, 3)
    ops = operator_folder(keys, tmp_path, "alice")
    old = tmp_path / "alice-old"
    shutil.copytree(ops, old)
    bob = operator_folder(keys, tmp_path, "bob")

    async def scenario() -> list[object]:
        async with running_server(settings_for(tmp_path, keys)) as running:
            port = running.port

            def alice(folder: Path) -> grpc.aio.Channel:
                return channel_for(folder, port, OPERATOR_CERT, OPERATOR_KEY, OPERATOR_CA)

            answers = [await ask(alice(ops))]
            issue_operator(keys, keys, "alice", ops)  # re-issued: the old certificate is out
            answers += [await ask(alice(old)), await ask(alice(ops))]
            revoke_operator(keys, "alice")
            answers += [await ask(alice(ops)), await ask(alice(bob))]
        return answers

    first, stale, reissued, revoked, other = asyncio.run(scenario())
    assert isinstance(first, pb.ServerStatus)
    assert stale is grpc.StatusCode.PERMISSION_DENIED
    assert isinstance(reissued, pb.ServerStatus)
    assert revoked is grpc.StatusCode.PERMISSION_DENIED
    assert isinstance(other, pb.ServerStatus)  # bob is untouched


def test_undecodable_status_requests_get_invalid_argument(tmp_path: Path) -> None:
    """The call guard covers the Operations service too: bytes that are not a
    StatusRequest get INVALID_ARGUMENT naming the message, not UNKNOWN; a valid empty
    request on the same channel is answered."""
    keys, _ = make_keys(tmp_path, 3)
    ops = operator_folder(keys, tmp_path)

    async def scenario() -> tuple[grpc.StatusCode, str, object]:
        async with running_server(settings_for(tmp_path, keys)) as running:
            channel = channel_for(ops, running.port, OPERATOR_CERT, OPERATOR_KEY, OPERATOR_CA)
            raw = channel.unary_unary("/fedveil.v1.Operations/GetStatus")
            try:
                await raw(b"\xff\xff\xff", timeout=10)
                code, details = grpc.StatusCode.OK, ""
            except grpc.aio.AioRpcError as exc:
                code, details = exc.code(), exc.details() or ""
            answered = await ask(channel)
        return code, details, answered

    code, details, answered = asyncio.run(scenario())
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert "fedveil.v1.StatusRequest" in details
    assert isinstance(answered, pb.ServerStatus)
