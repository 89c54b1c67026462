"""The records the measurements produce and the audit and benchmarks read, with their schema.

Why dataclasses and not dicts: a record is what a privacy claim is judged on, so a
misspelt field must fail where it is written or read, not silently vanish from a report.
Every record kind is a frozen dataclass; this module is the only place that turns one
into JSON (`to_json`) or back (`from_json`, which refuses unknown and missing keys by
name). The JSON is what `--json` of the benchmarks and the audit's job store
(attacks/audit/store.py) write; its keys and their order are the ones the suites wrote
as plain dicts, so stored jobs of earlier runs keep loading.

- LeakRecord: one update-leakage measurement (attacks.measure.update_leakage, text_leakage):
  the attack's score on a protection's view next to a data-free guess's score.
- OutputRecord: one output attack on one released model (attacks.measure.output_leakage):
  membership AUC / TPR with intervals, empirical epsilon, extraction before and after
  the output filters, a downsampled ROC curve, the model's OutputDetails and (in the
  audit) the FederationInfo it was released by.
- JobResult: a job's records and seconds, what the audit judges a cell on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TypeAlias

from fedveil.errors import FedveilError

JSONValue: TypeAlias = (
    None | bool | int | float | str | Sequence["JSONValue"] | Mapping[str, "JSONValue"]
)
"""A value that JSON can hold (the free-form parts of a record: attack parameters)."""

JSONObject: TypeAlias = dict[str, JSONValue]


class RecordError(FedveilError, ValueError):
    """A record's JSON does not match its schema (unknown, missing or mistyped field)."""


def _check_keys(kind: str, data: Mapping[str, object], required: Iterable[str],
                optional: Iterable[str] = ()) -> None:  # fmt: skip
    required, optional = set(required), set(optional)
    unknown = sorted(set(data) - required - optional)
    missing = sorted(required - set(data))
    if unknown or missing:
        raise RecordError(
            f"{kind} JSON does not match its schema: unknown keys {unknown}, missing keys "
            f"{missing} (fields: {sorted(required | optional)})"
        )


def _float(kind: str, key: str, value: object) -> float:
    """A number, also the "inf" / "-inf" strings JSON has instead of infinities."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise RecordError(f"{kind}.{key} must be a number, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise RecordError(f"{kind}.{key} must be a number, got {value!r}") from None


def _opt_float(kind: str, key: str, value: object) -> float | None:
    return None if value is None else _float(kind, key, value)


def _str(kind: str, key: str, value: object) -> str:
    if not isinstance(value, str):
        raise RecordError(f"{kind}.{key} must be a string, got {value!r}")
    return value


def _int(kind: str, key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordError(f"{kind}.{key} must be an int, got {value!r}")
    return value


def _object(kind: str, key: str, value: object) -> JSONObject:
    if not isinstance(value, Mapping):
        raise RecordError(f"{kind}.{key} must be a JSON object, got {value!r}")
    return {str(k): v for k, v in value.items()}


def finite_json(x: float) -> float | str:
    """x, or "inf" / "-inf" (JSON has no infinity)."""
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")


# --- update leakage ------------------------------------------------------------------


@dataclass(frozen=True)
class LeakRecord:
    """One row of the update-leakage measurements.

    target: the attacked model (e.g. "lenet-32"); protection: attacks.protections name;
    n_clients: how many clients' data the view mixes (1 for single-client views);
    metric: what was scored (psnr, ssim, label_acc, label_attribution_acc,
    label_multiset_acc, token_precision/recall/f1, exact_seq); value and baseline_value:
    the attack's score and a data-free guess's; seconds: the attack's time; params: the
    attack and its configuration, and for the DP views sigma, clip_norm,
    noise_multiplier, snr, epsilon, delta (free-form: it names the run, it is not judged).
    """

    target: str
    protection: str
    n_clients: int
    metric: str
    value: float
    baseline_value: float
    seconds: float
    params: Mapping[str, JSONValue] = field(default_factory=dict)

    @classmethod
    def measured(
        cls,
        target: str,
        protection: str,
        n_clients: int,
        metric: str,
        value: float,
        baseline: float,
        seconds: float,
        params: Mapping[str, JSONValue],
    ) -> LeakRecord:
        """A record with the suites' rounding (4 digits, seconds to the millisecond)."""
        return cls(
            target=target,
            protection=protection,
            n_clients=n_clients,
            metric=metric,
            value=round(float(value), 4),
            baseline_value=round(float(baseline), 4),
            seconds=round(float(seconds), 3),
            params=dict(params),
        )

    @property
    def attack(self) -> str | None:
        """The attack's name (params["attack"])."""
        attack = self.params.get("attack")
        return None if attack is None else str(attack)

    @property
    def figure(self) -> str | None:
        """The original-vs-reconstruction PNG of this run, if one was written."""
        figure = self.params.get("figure")
        return str(figure) if figure else None

    def run_key(self) -> tuple[str, str, int, str]:
        """Which attack run the record belongs to (its metric aside)."""
        params = json.dumps(self.params, sort_keys=True, default=str)
        return (self.target, self.protection, self.n_clients, params)

    def to_json(self) -> JSONObject:
        return {
            "target": self.target,
            "protection": self.protection,
            "n_clients": self.n_clients,
            "metric": self.metric,
            "value": finite_json(self.value),
            "baseline_value": finite_json(self.baseline_value),
            "seconds": self.seconds,
            "params": dict(self.params),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> LeakRecord:
        kind = cls.__name__
        _check_keys(kind, data, (f.name for f in fields(cls)))
        return cls(
            target=_str(kind, "target", data["target"]),
            protection=_str(kind, "protection", data["protection"]),
            n_clients=_int(kind, "n_clients", data["n_clients"]),
            metric=_str(kind, "metric", data["metric"]),
            value=_float(kind, "value", data["value"]),
            baseline_value=_float(kind, "baseline_value", data["baseline_value"]),
            seconds=_float(kind, "seconds", data["seconds"]),
            params=_object(kind, "params", data["params"]),
        )


# --- output leakage ------------------------------------------------------------------


@dataclass(frozen=True)
class OutputDetails:
    """What one released model is, shared by every output record on it.

    filters: per filter stack, attacks.output.filters' report (extraction before and
    after, benign FPR...); evasions: evasive output forms and prompts against them;
    params: the attacker's settings (n_samples, temperature, ngram, ...).
    """

    n_canaries: int
    n_members: int
    delta: float
    mean_exposure_members: float
    mean_exposure_non_members: float
    exposure_log2_space: Sequence[float]
    heldout_loss: float
    base_heldout_loss: float
    train_loss: float
    extraction_rate_non_members: float
    filters: Mapping[str, JSONValue] = field(default_factory=dict)
    evasions: Mapping[str, JSONValue] = field(default_factory=dict)
    params: Mapping[str, JSONValue] = field(default_factory=dict)

    def to_json(self) -> JSONObject:
        return {
            "n_canaries": self.n_canaries,
            "n_members": self.n_members,
            "delta": self.delta,
            "mean_exposure_members": finite_json(self.mean_exposure_members),
            "mean_exposure_non_members": finite_json(self.mean_exposure_non_members),
            "exposure_log2_space": list(self.exposure_log2_space),
            "heldout_loss": finite_json(self.heldout_loss),
            "base_heldout_loss": finite_json(self.base_heldout_loss),
            "train_loss": finite_json(self.train_loss),
            "extraction_rate_non_members": self.extraction_rate_non_members,
            "filters": dict(self.filters),
            "evasions": dict(self.evasions),
            "params": dict(self.params),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> OutputDetails:
        kind = cls.__name__
        _check_keys(kind, data, (f.name for f in fields(cls)))
        space = data["exposure_log2_space"]
        if not isinstance(space, list):
            raise RecordError(f"{kind}.exposure_log2_space must be a list, got {space!r}")
        floats = {
            k: _float(kind, k, data[k])
            for k in (
                "delta", "mean_exposure_members", "mean_exposure_non_members", "heldout_loss",
                "base_heldout_loss", "train_loss", "extraction_rate_non_members",
            )
        }  # fmt: skip
        return cls(
            n_canaries=_int(kind, "n_canaries", data["n_canaries"]),
            n_members=_int(kind, "n_members", data["n_members"]),
            exposure_log2_space=[_float(kind, "exposure_log2_space", v) for v in space],
            filters=_object(kind, "filters", data["filters"]),
            evasions=_object(kind, "evasions", data["evasions"]),
            params=_object(kind, "params", data["params"]),
            **floats,
        )


@dataclass(frozen=True)
class FederationInfo:
    """The federation that released the model an output record probes (audit only)."""

    parties: int
    rounds: int
    canaries: int
    clip_norm: float | None
    noise_multiplier: float | None
    train_seconds: float

    def to_json(self) -> JSONObject:
        return {
            "parties": self.parties,
            "rounds": self.rounds,
            "canaries": self.canaries,
            "clip_norm": self.clip_norm,
            "noise_multiplier": self.noise_multiplier,
            "train_seconds": self.train_seconds,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> FederationInfo:
        kind = cls.__name__
        _check_keys(kind, data, (f.name for f in fields(cls)))
        return cls(
            parties=_int(kind, "parties", data["parties"]),
            rounds=_int(kind, "rounds", data["rounds"]),
            canaries=_int(kind, "canaries", data["canaries"]),
            clip_norm=_opt_float(kind, "clip_norm", data["clip_norm"]),
            noise_multiplier=_opt_float(kind, "noise_multiplier", data["noise_multiplier"]),
            train_seconds=_float(kind, "train_seconds", data["train_seconds"]),
        )


@dataclass(frozen=True)
class Roc:
    """A downsampled ROC curve: (fpr, tpr) pairs, dense at low FPR."""

    fpr: Sequence[float]
    tpr: Sequence[float]

    def to_json(self) -> JSONObject:
        return {"fpr": list(self.fpr), "tpr": list(self.tpr)}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Roc:
        _check_keys("Roc", data, ("fpr", "tpr"))
        fpr, tpr = data["fpr"], data["tpr"]
        if not isinstance(fpr, list) or not isinstance(tpr, list) or len(fpr) != len(tpr):
            raise RecordError(f"Roc needs two lists of one length, got {fpr!r}, {tpr!r}")
        return cls([_float("Roc", "fpr", v) for v in fpr], [_float("Roc", "tpr", v) for v in tpr])


_TPR01 = "tpr_at_0.1pct_fpr"  # the JSON name of tpr_at_01pct_fpr (a Python name has no dot)


_OPTIONAL_OUTPUT_FIELDS = ("federation", "epsilon_certifiable")
"""OutputRecord fields a stored record may lack (written before they existed)."""


@dataclass(frozen=True)
class OutputRecord:
    """One output attack on one released model.

    protection, attack (registry name), attack_family (likelihood / generation); auc,
    tpr_at_1pct_fpr, tpr_at_01pct_fpr (JSON: "tpr_at_0.1pct_fpr") with their bootstrap
    intervals (_low, _high); min_fpr: 1 / non-members; epsilon_claimed (inf without DP),
    epsilon_lower_bound (one-run audit) and _cp (Clopper-Pearson); audit_passed: the
    lower bound does not exceed the claim; epsilon_certifiable: the largest one-run bound a
    perfect attack could reach with these canaries (a claim above it cannot be refuted
    here); extraction_rate: greedy extraction of member
    secrets, extraction_rate_filtered and filter_fpr: the same through the "all" filter
    stack and its false-positive rate on benign prompts (None: filters not measured);
    seconds: the attack's time, train_seconds: the release's; roc; details; federation.
    """

    protection: str
    attack: str
    attack_family: str
    auc: float
    auc_low: float
    auc_high: float
    tpr_at_1pct_fpr: float
    tpr_at_1pct_fpr_low: float
    tpr_at_1pct_fpr_high: float
    tpr_at_01pct_fpr: float
    tpr_at_01pct_fpr_low: float
    tpr_at_01pct_fpr_high: float
    min_fpr: float
    epsilon_claimed: float
    epsilon_lower_bound: float
    epsilon_lower_bound_cp: float
    audit_passed: bool
    extraction_rate: float
    extraction_rate_filtered: float | None
    filter_fpr: float | None
    seconds: float
    train_seconds: float
    roc: Roc
    details: OutputDetails
    federation: FederationInfo | None = None
    epsilon_certifiable: float | None = None

    def to_json(self) -> JSONObject:
        out: JSONObject = {}
        for f in fields(self):
            value = getattr(self, f.name)
            key = f.name.replace("tpr_at_01pct_fpr", _TPR01)
            if f.name in _OPTIONAL_OUTPUT_FIELDS and value is None:
                continue
            if isinstance(value, Roc | OutputDetails | FederationInfo):
                out[key] = value.to_json()
            elif isinstance(value, float) and not isinstance(value, bool):
                out[key] = finite_json(value)
            else:
                out[key] = value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> OutputRecord:
        kind = cls.__name__
        names = [f.name.replace("tpr_at_01pct_fpr", _TPR01) for f in fields(cls)]
        required = [n for n in names if n not in _OPTIONAL_OUTPUT_FIELDS]
        _check_keys(kind, data, required, optional=_OPTIONAL_OUTPUT_FIELDS)
        values: dict[str, object] = {}
        for f, key in zip(fields(cls), names, strict=True):
            raw = data.get(key)
            if f.name in ("protection", "attack", "attack_family"):
                values[f.name] = _str(kind, key, raw)
            elif f.name == "audit_passed":
                if not isinstance(raw, bool):
                    raise RecordError(f"{kind}.audit_passed must be a bool, got {raw!r}")
                values[f.name] = raw
            elif f.name in ("extraction_rate_filtered", "filter_fpr", "epsilon_certifiable"):
                values[f.name] = _opt_float(kind, key, raw)
            elif f.name == "roc":
                values[f.name] = Roc.from_json(_object(kind, key, raw))
            elif f.name == "details":
                values[f.name] = OutputDetails.from_json(_object(kind, key, raw))
            elif f.name == "federation":
                values[f.name] = (
                    None if raw is None else FederationInfo.from_json(_object(kind, key, raw))
                )
            else:
                values[f.name] = _float(kind, key, raw)
        return cls(**values)  # type: ignore[arg-type]


# --- one place for both kinds --------------------------------------------------------

Record: TypeAlias = LeakRecord | OutputRecord
"""Any record a job produces."""


def record_to_json(record: Record) -> JSONObject:
    return record.to_json()


def record_from_json(data: object) -> Record:
    """A stored record of either kind (an output record is the one with attack_family)."""
    if not isinstance(data, Mapping):
        raise RecordError(f"a record must be a JSON object, got {data!r}")
    if "attack_family" in data:
        return OutputRecord.from_json(data)
    return LeakRecord.from_json(data)


def records_to_json(records: Iterable[Record]) -> list[JSONObject]:
    return [record_to_json(r) for r in records]


def records_from_json(data: object) -> list[Record]:
    if not isinstance(data, list):
        raise RecordError(f"records must be a JSON list, got {type(data).__name__}")
    return [record_from_json(r) for r in data]


@dataclass(frozen=True)
class JobResult:
    """What the audit judges a cell on: a job's records (of one or several jobs) and their
    seconds."""

    records: Sequence[Record] = ()
    seconds: float = 0.0

    def leak_records(self) -> list[LeakRecord]:
        return [r for r in self.records if isinstance(r, LeakRecord)]

    def output_records(self) -> list[OutputRecord]:
        return [r for r in self.records if isinstance(r, OutputRecord)]


__all__ = [
    "FederationInfo",
    "JSONObject",
    "JSONValue",
    "JobResult",
    "LeakRecord",
    "OutputDetails",
    "OutputRecord",
    "Record",
    "RecordError",
    "Roc",
    "finite_json",
    "record_from_json",
    "record_to_json",
    "records_from_json",
    "records_to_json",
]
