"""Reading a team's delta file (attacks.own.delta_file): one upload or a stack of them,
never a pickle, every mismatch with the adapter named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from fedveil.attacks.own.delta_file import (
    DeltaMismatchError,
    match_delta,
    read_tensors,
)
from fedveil.errors import ConfigError

EXPECTED = {"h.0.c_attn.lora_B.weight": (6, 4), "lm_head.lora_B.weight": (10, 4)}
FROZEN = {"h.0.c_attn.lora_A.weight": (4, 3), "lm_head.lora_A.weight": (4, 3)}


def _match(path: Path, tensors: dict[str, torch.Tensor]) -> object:
    return match_delta(path, tensors, EXPECTED, FROZEN, rank=4, variant="ffa")


def _arrays(lead: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {n: rng.normal(size=lead + s).astype(np.float32) for n, s in EXPECTED.items()}


def _any(arrays: dict[str, np.ndarray]) -> Any:
    """numpy's stub types savez's keywords as allow_pickle; the arrays go through as Any."""
    return arrays


def test_safetensors_and_npz_read_alike(tmp_path: Path) -> None:
    arrays = _arrays()
    save_file(arrays, str(tmp_path / "d.safetensors"))
    np.savez(tmp_path / "d.npz", **_any(arrays))
    a = read_tensors(tmp_path / "d.safetensors")
    b = read_tensors(tmp_path / "d.npz")
    assert all(torch.equal(a[n], b[n]) for n in EXPECTED)
    delta = _match(tmp_path / "d.npz", b)
    assert not delta.stacked and len(delta.clients) == 1  # type: ignore[attr-defined]


def test_a_stack_is_split_per_client_and_weighted_in_the_mean(tmp_path: Path) -> None:
    arrays = _arrays((3,))
    arrays["client_weights"] = np.array([1.0, 2.0, 1.0])
    np.savez(tmp_path / "s.npz", **_any(arrays))
    delta = _match(tmp_path / "s.npz", read_tensors(tmp_path / "s.npz"))
    assert delta.stacked and len(delta.clients) == 3  # type: ignore[attr-defined]
    name = "lm_head.lora_B.weight"
    want = (arrays[name][0] + 2 * arrays[name][1] + arrays[name][2]) / 4
    got = delta.mean()[name].numpy()  # type: ignore[attr-defined]
    assert np.allclose(got, want)


def test_mismatches_are_named(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    tensors = {n: torch.from_numpy(a) for n, a in _arrays().items()}
    wrong = {**tensors, "lm_head.lora_B.weight": torch.zeros(10, 8)}
    with pytest.raises(DeltaMismatchError, match=r"has shape \(10, 8\); the model with rank 4 "):
        _match(path, wrong)
    with pytest.raises(DeltaMismatchError, match="freezes these"):
        _match(path, {**tensors, "h.0.c_attn.lora_A.weight": torch.zeros(4, 3)})
    with pytest.raises(DeltaMismatchError, match="missing 1 tensor.*fewer modules"):
        _match(path, {"lm_head.lora_B.weight": tensors["lm_head.lora_B.weight"]})
    with pytest.raises(DeltaMismatchError, match="one weight per client"):
        stack = {n: t[None] for n, t in tensors.items()}
        _match(path, {**stack, "client_weights": torch.ones(2, dtype=torch.float64)})


def test_pickles_and_unknown_files_are_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "p.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ConfigError, match="cannot be read"):
        read_tensors(tmp_path / "p.npz")
    (tmp_path / "d.pt").write_bytes(b"\x80\x04")
    with pytest.raises(ConfigError, match="never a pickle"):
        read_tensors(tmp_path / "d.pt")
    np.savez(tmp_path / "n.npz", x=np.array([np.nan], dtype=np.float32))
    with pytest.raises(ConfigError, match="NaN"):
        read_tensors(tmp_path / "n.npz")
