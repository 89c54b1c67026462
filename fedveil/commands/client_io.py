"""What `fedveil client` reads and writes: the update file, each round's result, the summary.

Why apart from the command: these are the only files the client touches besides its
credentials, and each has one rule worth reading on its own: the update is loaded
without pickle and checked before anything is sent, and every result is written
atomically, so a reader never sees half of one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fedveil.clients.streams import as_update_vector
from fedveil.clients.transport import AggregateResult
from fedveil.durable import write_atomically
from fedveil.errors import ConfigError


def load_update(path: Path) -> np.ndarray | dict[str, np.ndarray]:
    """The update as a flat vector (.npy) or named tensors (.npz, .safetensors); no pickle."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ConfigError(f"update file {path} does not exist")
    try:
        if suffix == ".npy":
            loaded = np.load(path, allow_pickle=False)
            if not isinstance(loaded, np.ndarray):
                raise ConfigError(f"{path} does not hold a single array")
            update: np.ndarray | dict[str, np.ndarray] = loaded
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                update = {name: archive[name] for name in archive.files}
        else:
            try:
                from safetensors.numpy import load_file
            except ImportError as exc:
                raise ConfigError(
                    "reading .safetensors needs the `safetensors` package; install it or "
                    "save the update as .npz"
                ) from exc
            update = dict(load_file(str(path)))
    except ConfigError:
        raise
    except (ValueError, OSError, EOFError, TypeError) as exc:
        raise ConfigError(f"cannot read the update {path}: {exc}") from exc
    _check_update(update, path)
    return update


def _check_update(update: np.ndarray | dict[str, np.ndarray], path: Path) -> None:
    arrays = update.values() if isinstance(update, dict) else [update]
    for array in arrays:
        if array.dtype.kind not in "fiu":
            raise ConfigError(f"{path}: the update must be numeric, found dtype {array.dtype}")
    vector, _ = as_update_vector(update)  # the SDK's own checks (1-D, named, non-empty)
    if vector.size == 0:
        raise ConfigError(f"{path}: the update is empty")
    if not np.all(np.isfinite(vector)):
        raise ConfigError(f"{path}: the update holds NaN or infinite values")


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write via a temporary file, so a reader never sees a half-written result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, write)


def write_result(path: Path, result: AggregateResult) -> None:
    if path.suffix.lower() == ".npz":
        # ConfigError when the round has no tensor names; float64 arrays never need pickle.
        tensors: dict[str, Any] = dict(result.as_tensors())
        _atomic_write(path, lambda fh: np.savez(fh, **tensors))
    else:
        _atomic_write(path, lambda fh: np.save(fh, result.weighted_mean, allow_pickle=False))


def _summary(result: AggregateResult) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "round_id": result.round_id,
        "survivors": list(result.survivors),
        "total_weight": result.total_weight,
        "error_bound": result.error_bound,
        "dimension": int(result.weighted_mean.shape[0]),
        # resume a later run after this round with --previous-result ROUND:DIGEST
        "result_digest": result.result_digest.hex() if result.result_digest else None,
    }
    if result.privacy is not None:
        summary["privacy"] = result.privacy.to_dict()
    if result.privacy_spent is not None:
        summary["privacy_spent"] = result.privacy_spent.to_dict()
    return summary


def write_summary(path: Path, results: list[AggregateResult]) -> None:
    text = json.dumps([_summary(r) for r in results], indent=2).encode() + b"\n"

    def write(fh: Any) -> None:
        fh.write(text)

    _atomic_write(path, write)
