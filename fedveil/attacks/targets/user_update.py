"""Target for the update attacks built from a USER's causal LM, adapter and records.

Why: `fedveil audit`'s text column asks "what does the round a protection leaves reveal
of the records a party trains on". With `[target] records` that question is asked of the
team's own base model and adapter (the same files `fedveil attack` reads: a
save_pretrained directory, a federation plan or `[lora]` table, a records JSONL), not of
the built-in tiny LM. This module only loads and checks them (attacks.own does the
work) and turns the loaded model into a TokenTarget whose loss is the causal-LM loss a
party trains with, so attacks.measure.observe can build every protection's view of the
clients' updates through the real aggregators, exactly as for the built-in targets.

What applies: token recovery (DAGER) on a GPT-2-style decoder whose block 0 attention
(c_attn) is adapted, and the LM head's token bag when the head is adapted. Everything
else (a captioner, whose records need images; a model or adapter token recovery cannot
read; a records file without usable rows) is refused when the config loads, with one
ConfigError line naming the `[target]` key to fix.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedveil.errors import ConfigError

if TYPE_CHECKING:  # the config imports this module; torch loads only when a target does
    from torch import Tensor

LoraSpec = Path | Mapping[str, Any] | None
"""`[target] lora`: a plan or `[lora]` TOML file, an inline `[target.lora]` table, or
None (the library's LoraSettings defaults, as `fedveil attack` without adapter flags)."""


@dataclass(frozen=True)
class UpdateTargetSpec:
    """The files of the update cells' user target (plain data: it travels to workers)."""

    model_dir: Path
    records: Path
    lora: LoraSpec = None
    lora_table: tuple[tuple[str, Any], ...] = field(default=(), repr=False)

    @classmethod
    def of(cls, model_dir: Path, records: Path, lora: LoraSpec) -> UpdateTargetSpec:
        if isinstance(lora, Mapping):
            table = tuple(sorted((str(k), _frozen(v)) for k, v in lora.items()))
            return cls(model_dir, records, None, table)
        return cls(model_dir, records, lora)

    def identity(self) -> list[Any]:
        """Paths with size and mtime of every file read, and the inline table: a changed
        model, records or adapter file is recomputed, never silently reused."""
        files = sorted(p for p in self.model_dir.iterdir() if p.is_file()) + [self.records]
        if isinstance(self.lora, Path):
            files.append(self.lora)
        stamps = [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
        table = json.loads(json.dumps(dict(self.lora_table), default=list))
        return [str(self.model_dir.resolve()), stamps, table]


def _frozen(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


@dataclass(eq=False)
class UserUpdateTarget:
    """The loaded target: the adapted model (attacks.own), its records, the TokenTarget
    the clients train and the attacks read, and the positions token recovery tries."""

    own: Any  # attacks.own.model_target.OwnModel (imported lazily: torch, transformers)
    records: list[Any]  # attacks.own.records.Record, file order
    token: Any  # attacks.update.base.TokenTarget over the adapted model, causal-LM loss
    max_length: int

    def client_data(self, record: Any) -> tuple[Tensor, Tensor]:
        """(input_ids, labels) of one record as a party's causal-LM batch of one: the
        tokenizer's own specials, labels -100 where nothing is predicted."""
        from fedveil.learner.training.batches import encode_texts

        encoded = encode_texts(self.own.tokenizer, [record.text], max_length=self.max_length)
        return encoded.input_ids, encoded.labels


def causal_lm_loss(model_call: Any, inputs: Tensor, labels: Tensor) -> Tensor:
    """Next-token cross-entropy with attention only on the positions that carry a label
    (the pad id is the tokenizer's, not 0 as in the built-in tiny LM's lm_loss)."""
    from fedveil.learner.training.batches import IGNORE_INDEX

    mask = labels != IGNORE_INDEX
    loss: Tensor = model_call(input_ids=inputs, attention_mask=mask.long(), labels=labels).loss
    return loss


def _source(spec: UpdateTargetSpec) -> Any:
    from fedveil.attacks.own.lora_source import settings_from_file, settings_from_table

    if spec.lora_table:
        table = {k: list(v) if isinstance(v, tuple) else v for k, v in spec.lora_table}
        return settings_from_table(table, "[target.lora]")
    if isinstance(spec.lora, Path):
        return settings_from_file(spec.lora, key="[target] lora")
    from fedveil.attacks.own.lora_source import settings_from_flags

    return settings_from_flags(None, None, None, None, None)


def load_update_target(spec: UpdateTargetSpec) -> UserUpdateTarget:
    """Load and check everything the update cells need; ConfigError naming the key."""
    from fedveil.attacks.own.model_target import load_own_model
    from fedveil.attacks.own.records import read_records
    from fedveil.attacks.own.run import MAX_CANDIDATE_VALUES, recovery_length
    from fedveil.attacks.update.base import TokenTarget
    from fedveil.learner.models.loading import ModelKind

    source = _source(spec)
    try:
        own = load_own_model(spec.model_dir, source, key="[target] model")
    except ConfigError as exc:
        text = str(exc)  # the adapter's own errors ("does not fit the model") name no key
        raise ConfigError(
            text if text.startswith("[target]") else f"[target] lora: {text}"
        ) from None
    if own.kind is ModelKind.CAPTIONER:
        raise ConfigError(
            f"[target] model {spec.model_dir} is a captioner: the update cells' records "
            "target trains a causal LM on text records (a captioner's update needs its "
            "images; attack its deltas with `fedveil attack`)"
        )
    records = read_records(spec.records, own.tokenizer, key="[target] records")
    length = recovery_length(own, records)
    found, reason = own.token_target(length)
    if found is None:
        raise ConfigError(f"[target] lora: {reason}")
    width = int(found.model.get_parameter(found.lora_a).shape[1])
    vocab = len(own.tokenizer)
    if vocab * found.max_length * width > MAX_CANDIDATE_VALUES:
        raise ConfigError(
            f"[target] records: {vocab} tokens x {found.max_length} positions x {width} "
            f"values exceed the {MAX_CANDIDATE_VALUES:,} candidate values token recovery "
            "lists; give shorter records"
        )
    positions = found.max_length
    too_long = [r.source for r in records if len(r.tokens) + 2 > positions]
    if too_long:
        raise ConfigError(
            f"[target] records: {too_long[0]} is longer than the {positions} positions the "
            f"model reads ({len(too_long)} such record(s)); shorten or drop them"
        )
    token = TokenTarget(
        name=found.name,
        model=found.model,
        loss=causal_lm_loss,
        lora_a=found.lora_a,
        lora_b=found.lora_b,
        candidates=found.candidates,
        max_length=found.max_length,
        eos_id=found.eos_id,
        pad_id=found.pad_id,
    )
    return UserUpdateTarget(own, records, token, positions)


@functools.lru_cache(maxsize=4)
def _checked(spec: UpdateTargetSpec, identity: str) -> int:
    return len(load_update_target(spec).records)


def check_update_target(spec: UpdateTargetSpec) -> int:
    """Load the target once per identity (config validation, before any job runs);
    the number of records. A missing file is named before anything loads."""
    if not spec.model_dir.is_dir():
        raise ConfigError(
            f"[target] model {spec.model_dir} is not a directory: give a local directory "
            "written by save_pretrained (fedveil never downloads models)"
        )
    if not spec.records.is_file():
        raise ConfigError(f"[target] records {spec.records} is not a file: give a JSONL file")
    if isinstance(spec.lora, Path) and not spec.lora.is_file():
        raise ConfigError(
            f"[target] lora {spec.lora} is not a file: give a federation plan (fedveil plan) "
            "or a TOML file with a [lora] table, or an inline [target.lora] table"
        )
    return _checked(spec, json.dumps(spec.identity(), default=str))


def cohort_records(records: Sequence[Any], clients: int, seed: int) -> list[int]:
    """Which record each of `clients` clients holds at seed `seed`: consecutive records
    from offset seed x clients (each seed a fresh draw where the file is long enough),
    wrapping around a file shorter than the cohort."""
    start = (seed * clients) % len(records)
    return [(start + i) % len(records) for i in range(clients)]


__all__ = [
    "UpdateTargetSpec",
    "UserUpdateTarget",
    "causal_lm_loss",
    "check_update_target",
    "cohort_records",
    "load_update_target",
]
