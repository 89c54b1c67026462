"""A party's checkpoint: global adapter, rounds done and model chain, in one atomic file.

Why one file: the adapter, the round count and the chain must move together. A party
whose adapter is from round 2 but whose chain says round 1 derives the wrong model hash
and is refused by the next round; two files cannot be replaced together, one file can
(fedveil.durable: temp file, fsync, rename, fsync of the folder).

Why safetensors: the adapter tensors (by canonical name, the layout's own) can be read by
any tool, and its string metadata carries the rest: the rounds done, the chain (last
round id and result digest), the last round's held-out figures (when the party evaluates)
and the fingerprint of the settings the run was started with,
so a re-run with other settings is refused instead of resuming a different federation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save

from fedveil.durable import write_atomically
from fedveil.errors import ConfigError
from fedveil.learner.lora.codec import AdapterLayout
from fedveil.secagg.protocol.model_chain import ModelChain

FORMAT = "fedveil.party-checkpoint/1"
CHECKPOINT_FILE = "checkpoint.safetensors"


@dataclass(frozen=True, eq=False)
class PartyCheckpoint:
    """What a party needs to resume: `rounds_done` rounds applied, ending at `adapter`."""

    rounds_done: int
    adapter: np.ndarray
    """The global adapter (float32, layout order) after the last applied round."""
    chain: ModelChain
    fingerprint: dict[str, object]
    metrics: dict[str, object] | None = None
    """The held-out figures of the last round, when the party evaluates (JSON-ready)."""


def write_checkpoint(path: Path, layout: AdapterLayout, checkpoint: PartyCheckpoint) -> None:
    """Replace `path` atomically (and durably) with `checkpoint`."""
    vector = np.asarray(checkpoint.adapter, dtype=np.float32)
    if vector.shape != (layout.size,):
        raise ConfigError(f"adapter has {vector.size} values, the layout {layout.size}")
    tensors = {
        slot.name: np.ascontiguousarray(
            vector[slot.offset : slot.offset + int(np.prod(slot.shape, dtype=np.int64))]
        ).reshape(slot.shape)
        for slot in layout.tensors.slots
    }
    chain = checkpoint.chain
    metadata = {
        "format": FORMAT,
        "rounds_done": str(checkpoint.rounds_done),
        "base_model_hash": chain.base_model_hash.hex(),
        "chain_round_id": "" if chain.round_id is None else str(chain.round_id),
        "chain_result_digest": "" if chain.result_digest is None else chain.result_digest.hex(),
        "fingerprint": json.dumps(checkpoint.fingerprint, sort_keys=True),
    }
    if checkpoint.metrics is not None:
        metadata["metrics"] = json.dumps(checkpoint.metrics, sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, save(tensors, metadata=metadata), sync_folder=True)


def read_fingerprint(path: Path) -> dict[str, object] | None:
    """Only the settings fingerprint of the checkpoint at `path` (None if there is none):
    what a party needs to rebuild its model as it was before reading the adapter."""
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="np") as reader:
            metadata = reader.metadata() or {}
        fingerprint = json.loads(metadata["fingerprint"])
    except Exception as exc:  # safetensors raises its own error types
        raise ConfigError(
            f"checkpoint {path} is unreadable ({exc}); remove it to start over"
        ) from None
    if not isinstance(fingerprint, dict):
        raise ConfigError(f"checkpoint {path} has a corrupt header; remove it to start over")
    return fingerprint


def read_checkpoint(path: Path, layout: AdapterLayout) -> PartyCheckpoint | None:
    """The checkpoint at `path` (None if there is none); ConfigError naming the file when
    it is corrupt or holds another adapter than `layout`."""
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="np") as reader:
            metadata = reader.metadata() or {}
            tensors = {name: reader.get_tensor(name) for name in reader.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types
        raise ConfigError(
            f"checkpoint {path} is unreadable ({exc}); remove it to start over"
        ) from None
    if metadata.get("format") != FORMAT:
        raise ConfigError(f"checkpoint {path} is not a {FORMAT} file; remove it to start over")
    expected = {slot.name: slot.shape for slot in layout.tensors.slots}
    found = {name: tuple(int(d) for d in t.shape) for name, t in tensors.items()}
    if found != expected:
        raise ConfigError(
            f"checkpoint {path} holds another adapter (tensors or shapes differ from the "
            "model's LoRA layout); use another out folder or remove the checkpoint"
        )
    adapter = np.concatenate(
        [tensors[slot.name].astype(np.float32).reshape(-1) for slot in layout.tensors.slots]
    )
    try:
        digest = metadata["chain_result_digest"]
        round_id = metadata["chain_round_id"]
        chain = ModelChain(
            bytes.fromhex(metadata["base_model_hash"]),
            result_digest=bytes.fromhex(digest) if digest else None,
            round_id=int(round_id) if round_id else None,
        )
        fingerprint = json.loads(metadata["fingerprint"])
        rounds_done = int(metadata["rounds_done"])
        metrics = json.loads(metadata["metrics"]) if "metrics" in metadata else None
    except (KeyError, ValueError) as exc:
        raise ConfigError(
            f"checkpoint {path} has a corrupt header ({exc}); remove it to start over"
        ) from None
    return PartyCheckpoint(rounds_done, adapter, chain, fingerprint, metrics)
