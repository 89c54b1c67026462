"""Service hardening, each claim attacked first over the real service (mutual TLS, loopback).

Why these attacks: an enrolled client is not a trusted one. One client holding dozens of
long polls and idle upload streams pins the server's handlers and buffers; a state folder
created with the process umask hands the journal (uploads, encrypted shares, the central
DP noise seed) to every local user; one crafted ciphertext at another scale, accepted as
a chunk's first contribution, made every later add fail and broke the honest round; a key
holder (with a colluding server) could hand the cohort a secret context off the agreed
preset; and gRPC reflection advertised the whole API to anyone who could connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import stat
import struct
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tenseal as ts
import tenseal.sealapi as sealapi
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from fedveil.errors import CryptoError
from fedveil.proto import aggregation_pb2 as pb
from fedveil.secagg.ckks.client_session import CkksClientSession, EpochKeyStore
from fedveil.secagg.ckks.codec import CiphertextSum
from fedveil.secagg.ckks.config import CkksRoundConfig
from fedveil.secagg.ckks.keys import CkksKeyring, load_public_context
from fedveil.secagg.ckks.messages import KeyDelivery
from fedveil.secagg.ckks.presets import preset
from fedveil.secagg.ckks.server_round import CkksServerRound
from fedveil.secagg.crypto.identity import SigningIdentity
from fedveil.secagg.protocol.config import ClientPolicy
from fedveil.server.call_guard import CallGuard
from fedveil.server.journal import RoundJournal
from fedveil.server.settings import ServerSettings
from tests.helpers.mallory import CALL_TIMEOUT_S, Case, Context, run_case
from tests.helpers.service_harness import (
    client_for,
    make_keys,
    raw_stub,
    running_server,
    settings_for,
)

CAP = 8  # the documented default of server.max_calls_per_client
CKKS = ("secagg", "ckks")
CLIP = 1.0
Code = grpc.StatusCode


# --- a cap on concurrent calls per client ------------------------------------------------


async def _never() -> AsyncIterator[pb.VectorChunk]:
    """An upload stream that opens and then never sends a chunk."""
    await asyncio.Event().wait()
    yield pb.VectorChunk()  # pragma: no cover - never reached


HELD: list[int] = []  # how many of mallory's calls the server held open, per run


async def floods_the_server_with_calls(ctx: Context) -> bool:
    """Mallory opens 6 long polls (resends of its accepted advertisement) and 12 idle
    upload streams at once. Without a cap all 18 stay open on the server; with it, at
    most CAP are held and the rest get RESOURCE_EXHAUSTED at once. The slots come back
    when calls end, and mallory still finishes the round validly."""
    mal = ctx.mallory
    polls = [mal.advertise() for _ in range(6)]
    await asyncio.sleep(0.3)
    idle = [mal.stub.UploadMaskedInput(_never(), timeout=CALL_TIMEOUT_S) for _ in range(12)]
    calls = [*polls, *idle]
    await asyncio.wait([asyncio.ensure_future(_settle(c)) for c in calls], timeout=0.8)
    held = [c for c in calls if not c.done()]
    refused = [c for c in calls if c.done()]
    HELD.append(len(held))
    if len(held) == len(calls):  # no cap (the undefended run): nothing more to check
        for call in idle:
            call.cancel()
        ctx.honest_may_start.set()
        mal.neighbour_keys = await polls[0]
        return await mal.finish()
    assert len(held) <= CAP, f"one client holds {len(held)} calls open on the server"
    assert len(held) == CAP, "calls under the cap must be served"
    for call in refused:
        assert await call.code() == Code.RESOURCE_EXHAUSTED, await call.details()
        assert "in flight" in (await call.details() or "")
    for call in idle:
        call.cancel()
    await asyncio.sleep(0.3)  # the server's handlers see the cancellation and give back slots
    info = await mal.stub.GetRound(
        pb.GetRoundRequest(client_id=mal.client_id), timeout=CALL_TIMEOUT_S
    )
    assert info.spec.round_id == mal.round_id
    ctx.honest_may_start.set()
    answers = [await c for c in polls if all(c is not r for r in refused)]
    assert answers and all(a == answers[0] for a in answers)
    mal.neighbour_keys = answers[0]
    return await mal.finish()


async def _settle(call: grpc.aio.Call) -> None:
    with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
        await call


def test_concurrent_calls_per_client_are_capped(tmp_path: Path) -> None:
    HELD.clear()
    survives, _ = asyncio.run(
        run_case(tmp_path, Case(floods_the_server_with_calls, hold_honest=True))
    )
    assert survives and HELD == [CAP]
    defaults = ServerSettings(round=settings_for(tmp_path, tmp_path).round, keys_dir=tmp_path)
    assert defaults.max_calls_per_client == CAP


def test_without_the_cap_one_client_holds_every_call_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack against a server whose cap is out of reach (the old behaviour)."""

    import fedveil.server.app as server_app

    monkeypatch.setattr(server_app, "CallGuard", lambda cap, service: CallGuard(10_000, service))
    HELD.clear()
    asyncio.run(run_case(tmp_path, Case(floods_the_server_with_calls, hold_honest=True)))
    assert HELD == [18]


def test_the_call_cap_must_be_positive(tmp_path: Path) -> None:
    from fedveil.errors import ConfigError

    base = settings_for(tmp_path, tmp_path)
    with pytest.raises(ConfigError, match="max_calls_per_client"):
        base.replace(max_calls_per_client=0)


# --- a private state folder ----------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_folder_and_journal_are_private_even_under_a_permissive_umask(
    tmp_path: Path,
) -> None:
    async def run() -> dict[str, int]:
        keys, _ = make_keys(tmp_path, 3)
        settings = settings_for(tmp_path, keys, rounds=1)
        previous = os.umask(0)
        try:
            async with running_server(settings):
                state = settings.state_dir
                return {p.name: _mode(p) for p in [state, *state.iterdir()]}
        finally:
            os.umask(previous)

    modes = asyncio.run(run())
    assert modes.pop("state") == 0o700, oct(_mode(tmp_path / "state"))
    assert "journal.sqlite3" in modes and "journal.sqlite3-wal" in modes
    assert all(mode == 0o600 for mode in modes.values()), {k: oct(v) for k, v in modes.items()}


def test_an_existing_loose_state_folder_and_journal_are_tightened(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    journal_path = state / "journal.sqlite3"
    RoundJournal(journal_path).close()
    state.chmod(0o755)
    journal_path.chmod(0o644)
    journal = RoundJournal(journal_path)
    try:
        assert _mode(state) == 0o700
        assert all(_mode(p) == 0o600 for p in state.iterdir())
    finally:
        journal.close()


# --- CKKS uploads: scale and level --------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _vector_bytes(size: int, seal_ciphertext: bytes, scale: float) -> bytes:
    """TenSEAL's CKKSVectorProto by hand: sizes (1), ciphertexts (2), scale (3)."""
    sizes = _varint(size)
    return (
        b"\x0a"
        + _varint(len(sizes))
        + sizes
        + b"\x12"
        + _varint(len(seal_ciphertext))
        + seal_ciphertext
        + b"\x19"
        + struct.pack("<d", scale)
    )


def crafted_ciphertext(public: CkksKeyring, size: int, fault: str) -> bytes:
    """What any member can make with the epoch's public key: zeros at another scale, or
    at the preset's scale one level down the modulus chain (the SEAL ciphertext switched
    and repacked, as a hand-written client could send it)."""
    context = public.context
    if fault == "scale":
        return bytes(ts.ckks_vector(context, [0.0] * size, scale=2.0**30).serialize())
    vector = ts.ckks_vector(context, [0.0] * size)
    ciphertext = vector.ciphertext()[0]
    sealapi.Evaluator(context.seal_context().data).mod_switch_to_next_inplace(ciphertext)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "ciphertext")
        ciphertext.save(path)
        raw = Path(path).read_bytes()
    return _vector_bytes(size, raw, ciphertext.scale)


def _inputs(ids: list[str], d: int, seed: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    updates = {c: rng.uniform(-0.9, 0.9, d).astype(np.float32) for c in ids}
    weights = {c: int(rng.integers(1, 500)) for c in ids}
    return updates, weights


def _weighted_mean(updates: dict[str, np.ndarray], weights: dict[str, int]) -> np.ndarray:
    total = sum(weights[c] for c in updates)
    return (
        sum(weights[c] * np.clip(updates[c], -CLIP, CLIP).astype(np.float64) for c in updates)
        / total
    )


def crafted_first_upload(
    tmp_path: Path, fault: str, preset_name: str
) -> tuple[grpc.StatusCode, str, list, dict, dict]:
    """Round 1 hands out the epoch's key; in round 2 mallory uploads first, a whole,
    well-formed upload of ciphertexts at another scale (or level), then the honest
    clients run. Returns mallory's status and details, and the honest outcomes."""
    d = 5000

    async def run() -> tuple[grpc.StatusCode, str, list, dict, dict]:
        keys, ids = make_keys(tmp_path, 4)
        settings = settings_for(
            tmp_path,
            keys,
            dimension=d,
            mode="ckks",
            rounds=2,
            stage_timeout_s=4.0,
            ckks_preset=preset_name,
        )
        updates, weights = _inputs(ids, d, seed=21)
        async with running_server(settings) as server:
            clients = {c: client_for(keys, c, server.port, allowed_modes=CKKS) for c in ids}
            await asyncio.gather(*(clients[c].run_round(updates[c], weights[c]) for c in ids))
            bad, good = ids[-1], ids[:-1]
            await clients[bad].close()
            while server.coordinator.current is None or server.coordinator.current.round_id != 2:
                await asyncio.sleep(0.05)
            active = server.coordinator.current
            round_server = active.server
            assert isinstance(round_server, CkksServerRound) and round_server.epoch is not None
            public = CkksKeyring.from_bytes(round_server.epoch.public_context)
            slots = preset(preset_name).slot_count
            sizes = [min(slots, d + 1 - i * slots) for i in range(active.spec.ckks.chunk_count)]
            pieces = [crafted_ciphertext(public, size, fault) for size in sizes]
            total = sum(len(p) for p in pieces)
            digest = hashlib.sha256(b"".join(pieces)).digest()
            chunks = [
                pb.VectorChunk(
                    round_id=2,
                    client_id=bad,
                    index=i,
                    data=piece,
                    total_bytes=total,
                    key_fingerprint=bytes(active.spec.ckks.key_fingerprint),
                    checksum=digest if i == len(pieces) - 1 else b"",
                )
                for i, piece in enumerate(pieces)
            ]
            channel, stub = raw_stub(keys, bad, server.port)
            upload = stub.UploadCiphertext(iter(chunks), timeout=30)
            while not upload.done() and bad not in round_server.uploaded:
                await asyncio.sleep(0.02)
            honest = await asyncio.gather(
                *(clients[c].run_round(updates[c], weights[c]) for c in good),
                return_exceptions=True,
            )
            await _settle(upload)
            code, details = await upload.code(), await upload.details()
            await channel.close()
            for c in good:
                await clients[c].close()
        return code, details or "", honest, updates, weights

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("fault", "preset_name"), [("scale", "add-only-8192"), ("level", "nvflare-8192")]
)
def test_a_crafted_first_ciphertext_cannot_block_the_honest_round(
    tmp_path: Path, fault: str, preset_name: str
) -> None:
    """Accepted, a ciphertext at another scale became every chunk's running sum and each
    honest add failed (UNKNOWN: "scale mismatch"): the round could not finish. One a level
    down was accepted too (TenSEAL switched the sum down to it). Both are refused with
    INVALID_ARGUMENT naming the fault, and the others finish with the exact mean."""
    code, details, honest, updates, weights = crafted_first_upload(tmp_path, fault, preset_name)
    broken = [r for r in honest if isinstance(r, BaseException)]
    assert not broken, f"the honest round broke after the crafted upload: {broken[0]!r}"
    assert code == Code.INVALID_ARGUMENT, (code, details)
    assert fault in details.lower()
    survivors = honest[0].survivors
    assert len(survivors) == 3
    expected = _weighted_mean({c: updates[c] for c in survivors}, weights)
    for result in honest:
        assert result.survivors == survivors
        assert np.max(np.abs(result.weighted_mean - expected)) <= 1e-6


def test_without_the_check_the_crafted_scale_breaks_the_honest_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack, with the server's scale and level check taken out: mallory's upload is
    accepted, every honest client is refused (its add fails against the crafted sum) and
    the round fails with mallory's upload alone."""
    monkeypatch.setattr(CiphertextSum, "_check_fresh", lambda self, index, ciphertext: None)
    code, details, honest, _, _ = crafted_first_upload(tmp_path, "scale", "add-only-8192")
    assert all(isinstance(r, BaseException) for r in honest), honest
    assert all("scale mismatch" in str(r) for r in honest), honest
    assert code == Code.FAILED_PRECONDITION and "1 ciphertext uploads" in details, details


# --- CKKS clients check the delivered secret context ---------------------------------------

IDS = ("c0", "c1", "c2")
OFF_PRESET = {
    # same ring degree and scale: the server's public-context check let this through
    "coeff": dict(poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 40, 40], scale=2.0**40),
    "degree": dict(poly_modulus_degree=16384, coeff_mod_bit_sizes=[60, 60], scale=2.0**40),
    "scale": dict(poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 60], scale=2.0**30),
}


def _off_preset_keyring(fault: str) -> CkksKeyring:
    spec = OFF_PRESET[fault]
    context = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=spec["poly_modulus_degree"],
        coeff_mod_bit_sizes=spec["coeff_mod_bit_sizes"],
    )
    context.global_scale = spec["scale"]
    return CkksKeyring(context)


@pytest.mark.parametrize("fault", sorted(OFF_PRESET))
def test_a_client_refuses_a_secret_context_off_the_rounds_preset(
    monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """A key holder (with a server that relays for it) seals a context of its own choice:
    another modulus chain, ring degree or scale than the round's preset. The receiving
    client opens it (the envelope is genuine) and must refuse to encrypt under it."""
    config = CkksRoundConfig(
        round_id=1,
        roster=IDS,
        dimension=100,
        preset_name="add-only-8192",
        key_epoch=0,
        key_holder="c0",
        max_weight=1000,
        value_bound=1.0,
        min_cohort=2,
        model_hash=hashlib.sha256(b"model").digest(),
    )
    identities = {c: SigningIdentity.generate() for c in IDS}
    roster = {c: i.verifying() for c, i in identities.items()}
    policy = ClientPolicy(min_cohort=2, min_threshold=2)
    sessions = {
        c: CkksClientSession(config, c, identities[c], roster, EpochKeyStore(), policy) for c in IDS
    }
    adverts = [s.advertise() for s in sessions.values()]
    monkeypatch.setattr(
        CkksKeyring, "generate", classmethod(lambda cls, _: _off_preset_keyring(fault))
    )
    publication = sessions["c0"].handle_advertisements(adverts)
    assert publication is not None
    if fault != "coeff":  # the server's own check (kept) catches these two
        with pytest.raises(CryptoError):
            load_public_context(publication.public_context, config.preset)
    victim = sessions["c1"]
    assert victim.handle_advertisements(adverts) is None
    wrapped = {w.recipient: w.ciphertext for w in publication.wrapped_keys}
    delivery = KeyDelivery(
        key_epoch=0,
        fingerprint=publication.fingerprint,
        holder=adverts[0],
        sealed_context=publication.sealed_context,
        wrapped_key=wrapped["c1"],
    )
    with pytest.raises(CryptoError, match="preset add-only-8192"):
        victim.handle_delivery(delivery)
    assert not victim.has_key
    with pytest.raises(Exception, match="holds no secret context"):
        victim.encrypt(np.zeros(100), 1)


def test_the_server_refuses_a_public_context_off_the_preset_chain() -> None:
    keyring = _off_preset_keyring("coeff")
    with pytest.raises(CryptoError, match="coeff"):
        load_public_context(keyring.public().to_bytes(), preset("add-only-8192"))


# --- reflection ---------------------------------------------------------------------------


async def _list_services(port: int, keys: Path, client_id: str) -> list[str]:
    channel, _ = raw_stub(keys, client_id, port)
    try:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        names: list[str] = []
        async for answer in stub.ServerReflectionInfo(iter([request]), timeout=10):
            names += [s.name for s in answer.list_services_response.service]
        return names
    finally:
        await channel.close()


@pytest.mark.parametrize("enabled", [False, True])
def test_reflection_is_off_unless_asked_for(tmp_path: Path, enabled: bool) -> None:
    async def run() -> list[str] | grpc.StatusCode:
        keys, ids = make_keys(tmp_path, 3)
        settings = settings_for(tmp_path, keys).replace(reflection=enabled)
        async with running_server(settings) as server:
            try:
                return await _list_services(server.port, keys, ids[0])
            except grpc.aio.AioRpcError as exc:
                return exc.code()

    answer = asyncio.run(run())
    if enabled:
        assert isinstance(answer, list) and "fedveil.v1.Aggregation" in answer
    else:
        assert answer == Code.UNIMPLEMENTED


def test_the_server_command_takes_a_reflection_flag() -> None:
    import argparse

    from fedveil.commands import server as server_command

    parser = argparse.ArgumentParser()
    server_command.add_parser(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["server", "--reflection"]).reflection is True
    assert parser.parse_args(["server"]).reflection is None


def test_the_new_settings_load_from_toml_and_refuse_wrong_types(tmp_path: Path) -> None:
    from fedveil.errors import ConfigError
    from fedveil.server.settings import load_settings

    base = f'[round]\ndimension = 10\nmodel_hash = "{"00" * 32}"\n[server]\ninsecure = true\n'
    good = tmp_path / "good.toml"
    good.write_text(base + "reflection = true\nmax_calls_per_client = 3\n")
    loaded = load_settings(good)
    assert loaded.reflection is True and loaded.max_calls_per_client == 3
    for line in ('reflection = "yes"', 'max_calls_per_client = "8"', "max_calls_per_client = 0"):
        bad = tmp_path / "bad.toml"
        bad.write_text(base + line + "\n")
        with pytest.raises(ConfigError, match=line.split(" ")[0]):
            load_settings(bad)
