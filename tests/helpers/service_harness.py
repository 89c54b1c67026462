"""Start a real fedveil server on loopback (mutual TLS) and make real clients for it."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import grpc

from fedveil.clients.credentials import ClientCredentials
from fedveil.clients.enrolment import request_enrolment
from fedveil.clients.transport import AsyncAggregationClient, TransportSecurity
from fedveil.proto import aggregation_pb2_grpc as pb_grpc
from fedveil.secagg.modes import DEFAULT_ALLOWED_MODES
from fedveil.secagg.protocol.config import ClientPolicy
from fedveil.server.app import RunningServer, start_server
from fedveil.server.keys_store import (
    client_dir,
    enrol_request,
    init_federation,
    init_keys,
    load_roster,
)
from fedveil.server.settings import RoundSettings, ServerSettings

# The base model every test client and server holds; each round chains it with the previous
# result (secagg.protocol.model_chain).
BASE_MODEL_HASH = hashlib.sha256(b"fedveil-test-base-model").digest()


def make_keys(root: Path, n: int) -> tuple[Path, list[str]]:
    ids = [f"org-{i:02d}" for i in range(n)]
    keys = root / "keys"
    init_keys(keys, ["localhost", "127.0.0.1"], ids)
    return keys, ids


def enrol_federation(root: Path, ids: Iterable[str], hosts: Iterable[str] = ()) -> Path:
    """The dealer-free layout: ROOT/ca (CA key), ROOT/server (what `fedveil server` gets)
    and ROOT/clients/<id>, each made by that client's own request. Returns ROOT/server;
    `enrolled_client_dir` finds a client's folder."""
    server_dir = root / "server"
    init_federation(
        root / "ca", server_dir, list(dict.fromkeys(["localhost", "127.0.0.1", *hosts]))
    )
    for cid in ids:
        request_enrolment(enrolled_client_dir(server_dir, cid), cid)
        enrol_request(
            enrolled_client_dir(server_dir, cid) / "request.json", root / "ca", server_dir
        )
    return server_dir


def enrolled_client_dir(server_dir: Path, client_id: str) -> Path:
    """A client's own folder in the layout `enrol_federation` writes (beside, never
    inside, the server's folder)."""
    return server_dir.parent / "clients" / client_id


def settings_for(root: Path, keys: Path, **round_kwargs: object) -> ServerSettings:
    defaults: dict[str, object] = {
        "dimension": 1000,
        "stage_timeout_s": 5.0,
        "min_cohort": 3,
        "model_hash": BASE_MODEL_HASH,
    }
    defaults.update(round_kwargs)
    return ServerSettings(
        round=RoundSettings(**defaults),  # type: ignore[arg-type]
        port=0,
        keys_dir=keys,
        state_dir=root / "state",
    )


@contextlib.asynccontextmanager
async def running_server(settings: ServerSettings) -> AsyncIterator[RunningServer]:
    running = await start_server(settings)
    try:
        yield running
    finally:
        await running.stop(grace_s=0.1)


def client_for(
    keys: Path,
    client_id: str,
    port: int,
    *,
    allowed_modes: Iterable[str] = DEFAULT_ALLOWED_MODES,
    **kwargs: object,
) -> AsyncAggregationClient:
    """A client with the default mode pin (SecAgg only); CKKS and plaintext tests opt in
    with `allowed_modes`, as a real deployment must."""
    credentials = ClientCredentials.load(client_dir(keys, client_id))
    roster = load_roster(keys).identities()
    kwargs.setdefault("base_model_hash", BASE_MODEL_HASH)
    return AsyncAggregationClient(
        f"localhost:{port}",
        client_id,
        credentials.identity,
        roster,
        TransportSecurity.from_credentials(credentials),
        policy=ClientPolicy(min_cohort=3, min_threshold=2, allowed_modes=frozenset(allowed_modes)),
        **kwargs,  # type: ignore[arg-type]
    )


def raw_stub(
    keys: Path, client_id: str, port: int
) -> tuple[grpc.aio.Channel, pb_grpc.AggregationStub]:
    """A bare stub with a client's mTLS identity, for sending deliberately bad requests."""
    credentials = ClientCredentials.load(client_dir(keys, client_id))
    channel = grpc.aio.secure_channel(f"localhost:{port}", credentials.channel_credentials())
    return channel, pb_grpc.AggregationStub(channel)


__all__ = [
    "BASE_MODEL_HASH",
    "client_for",
    "enrol_federation",
    "enrolled_client_dir",
    "make_keys",
    "raw_stub",
    "running_server",
    "settings_for",
]
