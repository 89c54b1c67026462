"""How much an attack recovered, always next to what a blind guess scores.

Why baselines everywhere: a PSNR of 14 dB means nothing alone; a mid-grey image already
scores ~11 dB on natural images. So every image metric is reported together with the
same metric for a data-free guess (a grey image, or the mean of a reference set), and a
protection is judged by the gap between the two. SSIM is pytorch-msssim's (the standard
11x11 Gaussian window), not a home-made one. Reconstructed batches come back in
arbitrary order, so images are matched to originals by an optimal assignment on PSNR.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pytorch_msssim import ssim as _ssim
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from fedveil.attacks.update.base import Reconstruction, Truth
from fedveil.errors import ConfigError


def _check_pair(a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape or a.ndim != 4:
        raise ConfigError(
            f"image batches must both be (N, C, H, W) of one shape, got {tuple(a.shape)} "
            f"and {tuple(b.shape)}"
        )


def psnr(reconstruction: Tensor, original: Tensor, data_range: float = 1.0) -> Tensor:
    """Per-image PSNR in dB, (N,), for images in [0, data_range]."""
    _check_pair(reconstruction, original)
    mse = (reconstruction.double() - original.double()).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-20))


def ssim(reconstruction: Tensor, original: Tensor, data_range: float = 1.0) -> Tensor:
    """Per-image SSIM, (N,), pytorch-msssim's Gaussian-window SSIM."""
    _check_pair(reconstruction, original)
    return _ssim(
        reconstruction.double(), original.double(), data_range=data_range, size_average=False
    )


def grey_image(original: Tensor, bounds: tuple[float, float] = (0.0, 1.0)) -> Tensor:
    """The data-free baseline: every pixel at the middle of the input range."""
    return torch.full_like(original, (bounds[0] + bounds[1]) / 2)


def mean_image(original: Tensor, reference: Tensor) -> Tensor:
    """The prior-only baseline: the per-pixel mean of a reference set, for every image."""
    return reference.mean(dim=0, keepdim=True).expand_as(original).to(original.dtype)


def match_images(reconstruction: Tensor, original: Tensor) -> Tensor:
    """Reconstructions reordered to the originals by an assignment maximising total PSNR.

    With fewer reconstructions than originals (a batch-1 attack on an aggregate), each
    original gets its best reconstruction, so the score is the attack's best case.
    """
    n, m = reconstruction.shape[0], original.shape[0]
    table = torch.stack(
        [psnr(reconstruction[i : i + 1].expand_as(original), original) for i in range(n)]
    )  # (n, m)
    if n < m:
        return reconstruction[table.argmax(dim=0)]
    rows, cols = linear_sum_assignment(-table.numpy())
    order = np.empty(m, dtype=np.int64)
    order[cols] = rows
    return reconstruction[torch.from_numpy(order)]


def image_metrics(
    reconstruction: Tensor,
    original: Tensor,
    *,
    bounds: tuple[float, float] = (0.0, 1.0),
    reference: Tensor | None = None,
) -> dict[str, float]:
    """Mean PSNR/SSIM of the matched reconstructions, their per-image maxima, and baselines.

    `*_baseline` is the grey image; with a `reference` set also `*_mean_baseline`.
    """
    matched = match_images(reconstruction, original)
    data_range = bounds[1] - bounds[0]
    lo = bounds[0]
    rec, orig = (matched - lo) / data_range, (original - lo) / data_range
    grey = (grey_image(original, bounds) - lo) / data_range
    p, s = psnr(rec, orig), ssim(rec, orig)
    out = {
        "psnr": float(p.mean()),
        "psnr_max": float(p.max()),
        "ssim": float(s.mean()),
        "psnr_baseline": float(psnr(grey, orig).mean()),
        "ssim_baseline": float(ssim(grey, orig).mean()),
    }
    if reference is not None:
        mean = (mean_image(original, reference) - lo) / data_range
        out["psnr_mean_baseline"] = float(psnr(mean, orig).mean())
        out["ssim_mean_baseline"] = float(ssim(mean, orig).mean())
    return out


def label_accuracy(predicted: Tensor, truth: Tensor) -> float:
    """Share of the true labels recovered, as multisets (batch order is not observable)."""
    hits = Counter(predicted.tolist()) & Counter(truth.tolist())
    return sum(hits.values()) / max(1, truth.numel())


def token_metrics(
    predicted: Sequence[Sequence[int]], truth: Sequence[Sequence[int]]
) -> dict[str, float]:
    """Token precision/recall/F1 over multisets, and the exact-sequence rate.

    Tokens are pooled over the batch (a bag, as in ROUGE-1); a true sequence counts as
    exactly recovered when it appears verbatim among the predicted sequences.
    """
    pred_bag = Counter(t for seq in predicted for t in seq)
    true_bag = Counter(t for seq in truth for t in seq)
    hits = sum((pred_bag & true_bag).values())
    precision = hits / max(1, sum(pred_bag.values()))
    recall = hits / max(1, sum(true_bag.values()))
    f1 = 0.0 if hits == 0 else 2 * precision * recall / (precision + recall)
    predicted_set = {tuple(seq) for seq in predicted}
    exact = sum(tuple(seq) in predicted_set for seq in truth) / max(1, len(truth))
    return {
        "token_precision": precision,
        "token_recall": recall,
        "token_f1": f1,
        "exact_seq": exact,
    }


def score(result: Reconstruction, truth: Truth) -> dict[str, float]:
    """Every metric that applies to what the attack produced."""
    metrics: dict[str, float] = {}
    if result.inputs is not None and truth.inputs is not None and truth.inputs.ndim == 4:
        metrics.update(image_metrics(result.inputs, truth.inputs))
    if result.labels is not None and truth.labels is not None:
        metrics["label_acc"] = label_accuracy(result.labels, truth.labels)
    if result.tokens is not None and truth.tokens is not None:
        metrics.update(token_metrics(result.tokens, truth.tokens))
    return metrics


def save_grid(
    path: str | Path,
    rows: Sequence[Tensor],
    *,
    scale: int = 3,
    pad: int = 2,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> Path:
    """A PNG with one row per batch (e.g. originals, reconstructions, baseline)."""
    if not rows:
        raise ConfigError("save_grid needs at least one row of images")
    height, width = rows[0].shape[-2:]
    columns = max(r.shape[0] for r in rows)
    cell_h, cell_w = height * scale + pad, width * scale + pad
    canvas = np.full((len(rows) * cell_h + pad, columns * cell_w + pad, 3), 255, dtype=np.uint8)
    lo, hi = bounds
    for i, row in enumerate(rows):
        if row.ndim != 4 or row.shape[-2:] != (height, width):
            raise ConfigError("every row of save_grid must be (N, C, H, W) of one image size")
        pixels = ((row.detach().double() - lo) / (hi - lo)).clamp(0, 1)
        if pixels.shape[1] == 1:
            pixels = pixels.expand(-1, 3, -1, -1)
        array = (pixels.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        for j, image in enumerate(array):
            big = np.kron(image, np.ones((scale, scale, 1), dtype=np.uint8))
            top, left = pad + i * cell_h, pad + j * cell_w
            canvas[top : top + height * scale, left : left + width * scale] = big
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas, "RGB").save(out)
    return out
