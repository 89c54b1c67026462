"""Reading an adapter delta file as a party sends it, or several as a server sees them.

Format (`.safetensors` or `.npz`; never a pickle: `.npz` is read with allow_pickle=False):

- one delta: one tensor per trainable adapter tensor, keyed by its canonical name
  (learner.lora.adapter.canonical_name, e.g. `decoder.transformer.h.0.attn.c_attn.
  lora_B.weight`, the names learner.lora.codec lays an upload out by), in its own shape;
- several deltas: the same keys, each tensor with a leading client axis,
  (n_clients, *shape), the same n for every key: row i of every tensor is client i's
  upload, as a plaintext server would hold them. An optional 1-D key `client_weights`
  (n positive numbers) gives the FedAvg weights of the mean that SecAgg reveals
  (equal weights without it).

Why the strict comparison: a delta that does not fit the adapter the team says it
trained is either the wrong file or the wrong settings, and any attack on it would
measure nothing. So every missing, extra or misshapen tensor is named, with the rank
and variant that would explain it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedveil.errors import ConfigError

WEIGHTS_KEY = "client_weights"
SUFFIXES = (".safetensors", ".npz")
_SHOWN = 4


class DeltaMismatchError(ConfigError):
    """A delta file does not fit the adapter built on the model (names or shapes)."""


@dataclass(frozen=True, eq=False)
class DeltaFile:
    """A delta file's tensors (float64), per client when it holds several.

    clients: one {canonical name: tensor} per upload (one for a single delta);
    weights: the FedAvg weight of each (1.0 each unless the file gives them);
    stacked: whether the file had a leading client axis.
    """

    path: Path
    clients: tuple[dict[str, torch.Tensor], ...]
    weights: tuple[float, ...]
    stacked: bool

    def mean(self) -> dict[str, torch.Tensor]:
        """The weighted mean of the uploads: what a secure aggregation reveals."""
        total = sum(self.weights)
        names = self.clients[0].keys()
        out: dict[str, torch.Tensor] = {}
        for n in names:
            summed = torch.zeros_like(self.clients[0][n])
            for weight, client in zip(self.weights, self.clients, strict=True):
                summed += weight * client[n]
            out[n] = summed / total
        return out


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a `.safetensors` or `.npz` file, as float64 (names kept)."""
    if not path.is_file():
        raise ConfigError(f"--delta {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(
            f"--delta {path}: expected a .safetensors or .npz file (never a pickle), got "
            f"{suffix or 'no suffix'!r}"
        )
    raw: dict[str, torch.Tensor]
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            raw = load_file(str(path), device="cpu")
        else:
            with np.load(path, allow_pickle=False) as archive:
                raw = {k: torch.from_numpy(np.array(archive[k])) for k in archive.files}
    except (OSError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"--delta {path} cannot be read as {suffix} ({exc})") from None
    except Exception as exc:  # safetensors' own SafetensorError derives from Exception only
        raise ConfigError(f"--delta {path} cannot be read as {suffix} ({exc})") from None
    if not raw:
        raise ConfigError(f"--delta {path} holds no tensors")
    out: dict[str, torch.Tensor] = {}
    for name, tensor in raw.items():
        if not (tensor.is_floating_point() or name == WEIGHTS_KEY):
            raise ConfigError(f"--delta {path}: tensor {name!r} is {tensor.dtype}, not floating")
        value = tensor.to(torch.float64)
        if not bool(torch.isfinite(value).all()):
            raise ConfigError(f"--delta {path}: tensor {name!r} holds NaN or infinite values")
        out[name] = value
    return out


def match_delta(
    path: Path,
    tensors: Mapping[str, torch.Tensor],
    expected: Mapping[str, tuple[int, ...]],
    frozen: Mapping[str, tuple[int, ...]],
    *,
    rank: int,
    variant: str,
) -> DeltaFile:
    """Check the file's tensors against the adapter's trainable ones; split the clients.

    expected: canonical name -> shape of every trainable adapter tensor; frozen: those
    the adapter holds but does not train (FFA-LoRA's A), named in the hint when a file
    carries them.
    """
    weights_tensor = tensors.get(WEIGHTS_KEY)
    given = {n: t for n, t in tensors.items() if n != WEIGHTS_KEY}
    _check_names(path, given, expected, frozen, variant)
    stacked = _is_stacked(given, expected)
    if not stacked:
        _check_shapes(path, given, expected, rank)
        if weights_tensor is not None:
            raise DeltaMismatchError(
                f"--delta {path} has {WEIGHTS_KEY!r} but no leading client axis on its "
                "tensors; a single delta has no client weights"
            )
        return DeltaFile(path, ({n: given[n] for n in expected},), (1.0,), False)
    count = next(iter(given.values())).shape[0]
    weights = _weights(path, weights_tensor, count)
    clients = tuple({n: given[n][i] for n in expected} for i in range(count))
    return DeltaFile(path, clients, weights, True)


def _check_names(
    path: Path,
    given: Mapping[str, torch.Tensor],
    expected: Mapping[str, tuple[int, ...]],
    frozen: Mapping[str, tuple[int, ...]],
    variant: str,
) -> None:
    missing = sorted(set(expected) - set(given))
    extra = sorted(set(given) - set(expected))
    if not missing and not extra:
        return
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} tensor(s) the adapter trains: {_few(missing)}")
    if extra:
        parts.append(f"{len(extra)} tensor(s) the adapter does not train: {_few(extra)}")
    hint = ""
    if extra and all(n in frozen for n in extra):
        hint = (
            f"; the adapter's variant {variant!r} freezes these (FFA-LoRA's A), so they never "
            "travel: was the delta made with variant 'fedavg'?"
        )
    elif extra and not missing:
        hint = "; were the adapters put on more modules (target modules) than given here?"
    elif missing and not extra:
        hint = "; were the adapters put on fewer modules (target modules) than given here?"
    elif extra:
        hint = (
            "; the keys must be the canonical names (learner.lora.adapter.canonical_name) of "
            "an adapter built with the same target modules and variant"
        )
    raise DeltaMismatchError(f"--delta {path} does not fit the adapter: {'; '.join(parts)}{hint}")


def _is_stacked(given: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]]) -> bool:
    """True when every tensor is its expected shape with one more, shared, leading axis."""
    leads = set()
    for name, shape in expected.items():
        actual = tuple(given[name].shape)
        if len(actual) != len(shape) + 1 or actual[1:] != shape:
            return False
        leads.add(actual[0])
    return len(leads) == 1 and next(iter(leads)) >= 1


def _check_shapes(
    path: Path,
    given: Mapping[str, torch.Tensor],
    expected: Mapping[str, tuple[int, ...]],
    rank: int,
) -> None:
    wrong = [
        (n, tuple(given[n].shape), shape)
        for n, shape in sorted(expected.items())
        if tuple(given[n].shape) != shape
    ]
    if not wrong:
        return
    name, actual, shape = wrong[0]
    more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
    raise DeltaMismatchError(
        f"--delta {path}: delta tensor {name} has shape {actual}; the model with rank {rank} "
        f"expects {shape}{more}. A stacked file needs the same leading client axis on every "
        "tensor"
    )


def _weights(path: Path, tensor: torch.Tensor | None, count: int) -> tuple[float, ...]:
    if tensor is None:
        return (1.0,) * count
    values = tensor.reshape(-1).tolist()
    if tensor.ndim != 1 or len(values) != count:
        raise DeltaMismatchError(
            f"--delta {path}: {WEIGHTS_KEY!r} must hold one weight per client ({count}), "
            f"has shape {tuple(tensor.shape)}"
        )
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise DeltaMismatchError(f"--delta {path}: {WEIGHTS_KEY!r} must be positive numbers")
    return tuple(float(v) for v in values)


def _few(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f", ... ({len(names) - _SHOWN} more)" if len(names) > _SHOWN else "")
