"""Target (a): the small CNN of the gradient-inversion literature, on 32x32 images.

Why this exact network: it is "LeNet" of Zhu et al.'s DLG paper as breaching ships it
(three 5x5 convolutions with 12 channels, sigmoid activations, one linear head,
weights uniform in [-0.5, 0.5]); published single-image numbers (DLG, batch 1: ~37 dB
PSNR against ~11 dB for a grey image) refer to it, so it is the sanity check that our
attack machinery is as strong as the reference before we trust its negative results on
protected views. Sigmoid (twice differentiable, no dead units) is what makes it easy.
"""

from __future__ import annotations

import torch
from torch import nn

from fedveil.attacks.update.base import InversionTarget


class LeNet(nn.Module):
    """LeNet as in DLG: conv(3->12, s2) - conv(12->12, s2) - conv(12->12, s1) - linear."""

    def __init__(self, num_classes: int = 10, channels: int = 3, size: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 12, kernel_size=5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, kernel_size=5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, kernel_size=5, padding=2, stride=1),
            nn.Sigmoid(),
        )
        self.fc = nn.Linear(12 * (size // 4) ** 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).flatten(1))


def lenet_target(num_classes: int = 10, seed: int = 0, size: int = 32) -> InversionTarget:
    """A randomly initialised LeNet (the global model of round 0) as an inversion target."""
    generator = torch.Generator().manual_seed(seed)
    model = LeNet(num_classes=num_classes, size=size)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand(p.shape, generator=generator) - 0.5)
    model.eval()
    return InversionTarget(
        name="lenet-32",
        model=model,
        input_shape=(3, size, size),
        num_classes=num_classes,
        head_weight="fc.weight",
        head_bias="fc.bias",
    )
