"""A privacy ledger that survives restarts: one JSON file per client and federation.

Why a file: secagg.dp.PrivacyLedger lives in memory, so a client that is restarted, or
runs one process per round, would start its budget from zero and could be queried past
it. PersistentPrivacyLedger stores every charged round and writes the file (to a
temporary file, fsync'd, renamed over the old one, the folder fsync'd) inside `charge`,
which the SDK calls just before it masks its noised update: the file is on disk before
the upload leaves. If the write fails, nothing is recorded and nothing is sent.

The file is bound to one federation (the SHA-256 fingerprint of its CA certificate), one
client and one budget: a ledger of another federation, another client, or a budget or
accountant that differs from the stored one is refused (ConfigError) rather than reset.
A corrupt file is refused too: it records privacy already spent, so starting over from
zero is never done silently. While a process holds the ledger it holds an exclusive lock
on `<file>.lock`, so two processes cannot each charge the same starting balance.

Events are data, stored as plain JSON (no pickle), with a format name and a version::

    {"format": "fedveil-privacy-ledger", "version": 1,
     "federation": "sha256:<hex>", "owner": "org-00",
     "budget": {"epsilon": 8.0, "delta": 1e-05},
     "accountant": "prv", "discrete_as_gaussian": false,
     "rounds": [{"charged_at": "2025-01-01T00:00:00+00:00", "epsilon_after": 3.1,
                 "events": [{"mechanism": "distributed_discrete_gaussian", ...}]}]}

`epsilon_after` is for people reading the file; on load the epsilon is recomputed from
the events.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedveil.durable import write_atomically
from fedveil.errors import ConfigError, FedveilError
from fedveil.secagg.dp.accounting import AccountingMethod, EpsilonReport
from fedveil.secagg.dp.budget import PrivacyBudget, PrivacyLedger
from fedveil.secagg.dp.events import (
    DistributedDiscreteGaussianEvent,
    DpEvent,
    GaussianEvent,
    SkellamEvent,
)

FORMAT = "fedveil-privacy-ledger"
VERSION = 1
LEDGER_FILE = "privacy-ledger.json"
"""The suggested name, in the client's credentials folder."""

_EVENT_TYPES: dict[str, type[DpEvent]] = {
    "gaussian": GaussianEvent,
    "distributed_discrete_gaussian": DistributedDiscreteGaussianEvent,
    "skellam": SkellamEvent,
}
_TOP_KEYS = frozenset(
    {"format", "version", "federation", "owner", "budget", "accountant"}
    | {"discrete_as_gaussian", "rounds"}
)


class PrivacyLedgerWriteError(FedveilError):
    """The ledger file could not be written: the round is refused before anything of the
    noised update is sent (a round that cannot be recorded must not be spent)."""

    grpc_status = "ABORTED"


def federation_fingerprint(ca_pem: bytes) -> str:
    """ "sha256:<hex>" of the CA certificate (DER): the federation a ledger belongs to."""
    try:
        cert = x509.load_pem_x509_certificate(ca_pem)
    except ValueError as exc:
        raise ConfigError(f"the CA certificate is not a PEM certificate: {exc}") from exc
    der = cert.public_bytes(serialization.Encoding.DER)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def event_to_json(event: DpEvent) -> dict[str, Any]:
    """Every field of a (frozen dataclass) event, plus its mechanism name."""
    if not dataclasses.is_dataclass(event) or _EVENT_TYPES.get(event.mechanism) is not type(event):
        raise ConfigError(f"cannot store a {type(event).__name__} in a privacy ledger")
    record: dict[str, Any] = {"mechanism": event.mechanism}
    for f in dataclasses.fields(event):
        record[f.name] = getattr(event, f.name)
    return record


def event_from_json(record: object) -> DpEvent:
    """The event a record of `event_to_json` describes (validated by the event itself)."""
    if not isinstance(record, dict):
        raise ValueError(f"an event must be an object, got {type(record).__name__}")
    values = dict(record)
    mechanism = values.pop("mechanism", None)
    kind = _EVENT_TYPES.get(mechanism) if isinstance(mechanism, str) else None
    if kind is None:
        raise ValueError(f"unknown mechanism {mechanism!r}; known: {sorted(_EVENT_TYPES)}")
    names = {f.name for f in dataclasses.fields(kind)}  # type: ignore[arg-type]
    if set(values) != names:
        raise ValueError(
            f"a {mechanism} event has the fields {sorted(names)}, got {sorted(values)}"
        )
    try:
        return kind(**values)
    except (ConfigError, TypeError) as exc:
        raise ValueError(f"bad {mechanism} event: {exc}") from None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class _Stored:
    federation: str
    owner: str
    budget: PrivacyBudget
    method: AccountingMethod
    discrete_as_gaussian: bool
    rounds: list[tuple[dict[str, Any], tuple[DpEvent, ...]]]


def _parse(data: object) -> _Stored:
    """The stored ledger, or ValueError naming what is wrong."""
    if not isinstance(data, dict):
        raise ValueError(f"the top level must be an object, got {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise ValueError(f"format is {data.get('format')!r}, not {FORMAT!r}")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"version must be an integer, got {version!r}")
    if version > VERSION:
        raise ValueError(
            f"it is version {version}, written by a newer fedveil (this one reads {VERSION}); "
            "upgrade fedveil"
        )
    if version < 1:
        raise ValueError(f"version must be >= 1, got {version}")
    missing = sorted(_TOP_KEYS - set(data))
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    federation, owner = data["federation"], data["owner"]
    if not isinstance(federation, str) or not federation.startswith("sha256:"):
        raise ValueError(f"federation must be 'sha256:<hex>', got {federation!r}")
    if not isinstance(owner, str) or not owner:
        raise ValueError(f"owner must be a client id, got {owner!r}")
    budget_data = data["budget"]
    if not isinstance(budget_data, dict) or set(budget_data) != {"epsilon", "delta"}:
        raise ValueError(f"budget must be {{epsilon, delta}}, got {budget_data!r}")
    epsilon = _number(budget_data["epsilon"], "budget epsilon")
    delta = _number(budget_data["delta"], "budget delta")
    try:
        budget = PrivacyBudget(epsilon, delta)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    known = {m.value: m for m in AccountingMethod}
    if not isinstance(data["accountant"], str) or data["accountant"] not in known:
        raise ValueError(f"accountant must be one of {sorted(known)}, got {data['accountant']!r}")
    method = known[data["accountant"]]
    if not isinstance(data["discrete_as_gaussian"], bool):
        raise ValueError("discrete_as_gaussian must be true or false")
    rounds_data = data["rounds"]
    if not isinstance(rounds_data, list):
        raise ValueError(f"rounds must be a list, got {type(rounds_data).__name__}")
    rounds: list[tuple[dict[str, Any], tuple[DpEvent, ...]]] = []
    for number, entry in enumerate(rounds_data, 1):
        if not isinstance(entry, dict) or not isinstance(entry.get("events"), list):
            raise ValueError(f"round {number} must be an object with a list of events")
        try:
            events = tuple(event_from_json(e) for e in entry["events"])
        except ValueError as exc:
            raise ValueError(f"round {number}: {exc}") from None
        rounds.append((entry, events))
    return _Stored(federation, owner, budget, method, data["discrete_as_gaussian"], rounds)


class PersistentPrivacyLedger(PrivacyLedger):
    """A PrivacyLedger kept in a file; create or load one with `open`.

    Pass it to the SDK as `privacy_budget=` (clients.transport.AsyncAggregationClient): the
    SDK charges it just before it masks a noised update, and this class writes the file
    before the charge returns.
    """

    def __init__(
        self,
        path: Path,
        budget: PrivacyBudget,
        *,
        federation: str,
        owner: str,
        method: AccountingMethod | str,
        discrete_as_gaussian: bool,
        lock_fd: int,
    ) -> None:
        super().__init__(
            budget, method=method, owner=owner, discrete_as_gaussian=discrete_as_gaussian
        )
        self.path = path
        self.federation = federation
        self._entries: list[dict[str, Any]] = []
        self._lock_fd: int | None = lock_fd

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        budget: PrivacyBudget,
        *,
        federation: str,
        owner: str,
        method: AccountingMethod | str = AccountingMethod.PRV,
        discrete_as_gaussian: bool = False,
    ) -> PersistentPrivacyLedger:
        """Load the ledger at `path`; if there is none, it is written at the first charge.

        ConfigError, naming what to do, when the file is unreadable or corrupt, belongs
        to another federation or client, was created with another budget or accountant,
        or is held by another process."""
        if not isinstance(budget, PrivacyBudget):
            raise ConfigError(f"budget must be a PrivacyBudget, got {type(budget).__name__}")
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"privacy ledger {path} is a directory; give a file path")
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            lock_fd = _lock(path)
        except OSError as exc:
            raise ConfigError(f"cannot open the privacy ledger {path}: {exc}") from exc
        try:
            ledger = cls(
                path,
                budget,
                federation=federation,
                owner=owner,
                method=method,
                discrete_as_gaussian=discrete_as_gaussian,
                lock_fd=lock_fd,
            )
        except BaseException:
            os.close(lock_fd)
            raise
        try:
            if path.exists():
                ledger._load()
        except BaseException:
            ledger.close()
            raise
        return ledger

    # --- file ----------------------------------------------------------------------------

    def _load(self) -> None:
        path = self.path
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise _corrupt(path, f"not UTF-8 text ({exc.reason})") from None
        except OSError as exc:
            raise ConfigError(f"cannot read the privacy ledger {path}: {exc}") from exc
        try:
            data = json.loads(text, parse_constant=_reject_constant)
            stored = _parse(data)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise _corrupt(path, str(exc)) from None
        if stored.federation != self.federation:
            raise ConfigError(
                f"privacy ledger {path} belongs to another federation (CA {stored.federation}); "
                f"this client's CA is {self.federation}. A ledger counts the privacy spent in "
                "one federation: give this one its own ledger file"
            )
        if stored.owner != self.owner:
            raise ConfigError(
                f"privacy ledger {path} belongs to client {stored.owner!r}, not {self.owner!r}; "
                "each client keeps its own ledger"
            )
        if stored.budget != self.budget:
            raise ConfigError(
                f"privacy ledger {path} was created with the budget epsilon="
                f"{stored.budget.epsilon:g} delta={stored.budget.delta:g}; this run asks for "
                f"epsilon={self.budget.epsilon:g} delta={self.budget.delta:g}. A ledger's "
                "budget is fixed for its life: run with the stored budget"
            )
        if (stored.method, stored.discrete_as_gaussian) != (
            self.method,
            self.discrete_as_gaussian,
        ):
            raise ConfigError(
                f"privacy ledger {path} accounts with {stored.method.value} "
                f"(discrete_as_gaussian={stored.discrete_as_gaussian}), this run with "
                f"{self.method.value} (discrete_as_gaussian={self.discrete_as_gaussian}); "
                "use the stored accountant"
            )
        for entry, events in stored.rounds:
            self._record(events)
            self._entries.append(entry)

    def _document(self, entries: Sequence[dict[str, Any]]) -> str:
        data = {
            "format": FORMAT,
            "version": VERSION,
            "federation": self.federation,
            "owner": self.owner,
            "budget": {"epsilon": self.budget.epsilon, "delta": self.budget.delta},
            "accountant": self.method.value,
            "discrete_as_gaussian": self.discrete_as_gaussian,
            "rounds": list(entries),
        }
        return json.dumps(data, indent=1, allow_nan=False) + "\n"

    def _store(self, entries: Sequence[dict[str, Any]] = ()) -> None:
        write_atomically(self.path, self._document(entries).encode("utf-8"), sync_folder=True)

    # --- ledger --------------------------------------------------------------------------

    def charge(self, events: Sequence[DpEvent]) -> EpsilonReport:
        """Check, write the file with this round added (durably), then record it.

        If the write fails (PrivacyLedgerWriteError) nothing is recorded, and the SDK,
        which charges just before it masks, sends nothing."""
        if self._lock_fd is None:
            raise ConfigError(f"privacy ledger {self.path} is closed; open it again")
        events = list(events)
        after = self.check(events)
        entry = {
            "charged_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "epsilon_after": after.epsilon,
            "events": [event_to_json(e) for e in events],
        }
        try:
            self._store([*self._entries, entry])
        except OSError as exc:
            raise PrivacyLedgerWriteError(
                f"cannot record this round in the privacy ledger {self.path}: {exc}; "
                "refusing to send the noised update (nothing was sent)"
            ) from exc
        self._entries.append(entry)
        self._record(events)
        return after

    def close(self) -> None:
        """Release the lock; the ledger refuses further charges."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> PersistentPrivacyLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _lock(path: Path) -> int:
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(
            f"privacy ledger {path} is in use by another process (lock {lock_path}); run one "
            "client process per ledger at a time"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _corrupt(path: Path, reason: str) -> ConfigError:
    return ConfigError(
        f"privacy ledger {path} is corrupt ({reason}); it records privacy already spent, so "
        "fedveil will not start it over from zero: restore the file from a backup"
    )
