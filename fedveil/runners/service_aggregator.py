"""The aggregation service on loopback as a FedAvg aggregate function.

Why: the federated learning loop asks for `aggregate(list of (update, weight)) -> weighted
mean`; here every party is a real enrolled client (its own mutual-TLS certificate and
Ed25519 identity) of a real fedveil server, and the mean comes back from the service in
the chosen mode (SecAgg+, CKKS or the plaintext baseline), so no party's update is ever
seen by the server except in plaintext mode. Server and clients run on a private event
loop in a background thread, so the training loop stays ordinary blocking code.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from fedveil.clients.credentials import ClientCredentials
from fedveil.clients.enrolment import REQUEST_FILE, request_enrolment
from fedveil.clients.roster_file import load_roster_identities
from fedveil.clients.transport import AggregateResult, AsyncAggregationClient, TransportSecurity
from fedveil.errors import ConfigError, ProtocolError
from fedveil.secagg.dp import PrivacyBudget
from fedveil.secagg.modes import AggregationMode, DPKind, mode_spec, parse_mode
from fedveil.secagg.protocol.config import ClientPolicy
from fedveil.server.app import RunningServer, start_server
from fedveil.server.keys_store import (
    ROSTER_FILE,
    check_server_folders,
    enrol_request,
    init_federation,
    load_roster,
)
from fedveil.server.settings import RoundSettings, ServerSettings

STAGE_LABELS = {
    "advertise-keys": "advertise keys",
    "share-keys": "share keys",
    "masked-input": "upload",
    "consistency-check": "consistency check",
    "unmask": "unmask",
    "done": "done",
}


@dataclass
class ServiceAggregator:
    """Start a server and one client per party; `__call__` runs one secure round."""

    party_ids: Sequence[str]
    dimension: int
    # SHA-256 of the base model every party holds (required; e.g. Party.base_hash): each
    # round's model hash chains it with the previous result (secagg.protocol.model_chain).
    base_model_hash: bytes | None = None
    mode: AggregationMode | str = AggregationMode.SECAGG  # a spelling is parsed on entry
    rounds: int = 0
    clip: float = 1.0
    # LoRA deltas are ~1e-3: 48-bit elements with max_weight near the real weights keep the
    # SecAgg quantisation error around 1e-10 (32 bits at max_weight 1e5 would be ~1e-4).
    bits: int = 48
    max_weight: int = 10_000
    stage_timeout_s: float = 300.0
    # Client-level distributed DP (secagg mode): every party clips its update to L2 <=
    # dp_clip_norm and adds its share of the noise that makes `rounds` rounds cost at most
    # dp_epsilon at dp_delta; each party's ledger refuses rounds past that budget.
    dp_epsilon: float | None = None
    dp_delta: float = 1e-5
    dp_clip_norm: float = 1.0
    progress: bool = True
    work_dir: Path | None = None
    results: list[AggregateResult] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _server: RunningServer | None = field(default=None, repr=False)
    _clients: list[AsyncAggregationClient] = field(default_factory=list, repr=False)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.mode = parse_mode(self.mode)

    def __enter__(self) -> ServiceAggregator:
        if len(set(self.party_ids)) != len(self.party_ids) or len(self.party_ids) < 2:
            raise ConfigError(f"need at least two distinct parties, got {list(self.party_ids)}")
        if self.base_model_hash is None:
            raise ConfigError(
                "base_model_hash is required: the SHA-256 of the base model every party holds"
            )
        if self.work_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fedveil-demo-")
            self.work_dir = Path(self._tmp.name)
        keys, party_dirs = self._enrol()
        settings = ServerSettings(
            round=RoundSettings(
                dimension=self.dimension,
                mode=parse_mode(self.mode),
                rounds=self.rounds,
                min_cohort=len(self.party_ids),
                clip=self.clip,
                bits=self.bits,
                max_weight=self.max_weight,
                stage_timeout_s=self.stage_timeout_s,
                model_hash=self.base_model_hash,
                **self._dp_settings(),
            ),
            port=0,
            keys_dir=keys,
            state_dir=self.work_dir / "server-state",
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = self._run(start_server(settings))
        # Each party checks the roster against the fingerprint the operator printed
        # (`fedveil keys show`), here read straight from the operator's side.
        roster = load_roster_identities(keys / ROSTER_FILE, load_roster(keys).sha256())
        for party in self.party_ids:
            credentials = ClientCredentials.load(party_dirs[party])
            self._clients.append(
                AsyncAggregationClient(
                    f"localhost:{self._server.port}",
                    party,
                    credentials.identity,
                    roster,
                    TransportSecurity.from_credentials(credentials),
                    base_model_hash=self.base_model_hash,
                    policy=ClientPolicy(
                        min_cohort=len(self.party_ids),
                        min_threshold=2,
                        # The pin comes from the same local choice that configured this
                        # in-process server, not from the wire: its clients opt in to
                        # exactly that mode (plaintext only when a caller asked for the
                        # unprotected baseline).
                        allowed_modes=frozenset({AggregationMode.SECAGG, parse_mode(self.mode)}),
                    ),
                    privacy_budget=(
                        PrivacyBudget(self.dp_epsilon, self.dp_delta)
                        if self.dp_epsilon is not None
                        else None
                    ),
                )
            )
        return self

    def _enrol(self) -> tuple[Path, dict[str, Path]]:
        """The dealer-free flow on one machine: the operator's CA and server folders, and
        one folder per party whose keys that party's own request made (never copied into
        the server's folder, which the server checks before it starts)."""
        assert self.work_dir is not None
        ca, keys = self.work_dir / "ca", self.work_dir / "server-keys"
        init_federation(ca, keys, ["localhost", "127.0.0.1"], overwrite=True)
        party_dirs = {party: self.work_dir / "parties" / party for party in self.party_ids}
        for party, folder in party_dirs.items():
            request_enrolment(folder, party, force=True)  # on the party's machine
            enrol_request(folder / REQUEST_FILE, ca, keys)  # the operator signs and lists it
        check_server_folders(keys, self.work_dir / "server-state")
        return keys, party_dirs

    def _dp_settings(self) -> dict[str, Any]:
        if self.dp_epsilon is None:
            return {}
        if not mode_spec(self.mode).carries_client_dp:
            raise ConfigError("client-level DP runs inside SecAgg: use mode 'secagg'")
        return {
            "dp": DPKind.CLIENT,
            "dp_target_epsilon": self.dp_epsilon,
            "dp_delta": self.dp_delta,
            "dp_clip_norm": self.dp_clip_norm,
        }

    def _run(self, coroutine: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def __call__(self, updates: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
        """One round over the service: every party uploads, every party gets the mean."""
        if len(updates) != len(self._clients):
            raise ConfigError(f"{len(updates)} updates for {len(self._clients)} parties")
        results: list[AggregateResult] = self._run(self._round(updates))
        first = results[0]
        if any(not np.array_equal(r.weighted_mean, first.weighted_mean) for r in results):
            raise ProtocolError("parties received different aggregates from the service")
        self.results.append(first)
        return first.weighted_mean

    async def _round(self, updates: Sequence[tuple[np.ndarray, float]]) -> list[AggregateResult]:
        watcher = asyncio.ensure_future(self._show_stages())
        try:
            return list(
                await asyncio.gather(
                    *(
                        client.run_round(np.asarray(vector, dtype=np.float32), int(weight))
                        for client, (vector, weight) in zip(self._clients, updates, strict=True)
                    )
                )
            )
        finally:
            watcher.cancel()

    async def _show_stages(self) -> None:
        """A progress bar of the server's stages while the round runs."""
        assert self._server is not None
        coordinator = self._server.coordinator
        bar = tqdm(desc=f"  {self.mode} round", total=None, disable=not self.progress, leave=False)
        seen: str | None = None
        started = time.perf_counter()
        try:
            while True:
                current = coordinator.current
                stage = current.server.stage.value if current is not None else "waiting"
                if stage != seen:
                    seen = stage
                    bar.update(1)
                    bar.set_postfix_str(
                        f"{STAGE_LABELS.get(stage, stage)} ({time.perf_counter() - started:.1f}s)"
                    )
                await asyncio.sleep(0.05)
        finally:
            bar.close()

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            for client in self._clients:
                self._run(client.close())
            if self._server is not None:
                self._run(self._server.stop(grace_s=0.2))
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._loop.close()
        if self._tmp is not None:
            self._tmp.cleanup()
