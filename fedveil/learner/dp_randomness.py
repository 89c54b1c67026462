"""DP-SGD's noise and Poisson batches from the OS's cryptographically secure generator.

Why: the privacy guarantee of DP-SGD holds only against someone who cannot predict the
Gaussian noise or the Poisson batch masks. Opacus draws both from torch's generator
unless `PrivacyEngine(secure_mode=True)`, and in the installed Opacus (1.6) secure_mode
needs the `torchcsprng` package (archived upstream, not built for current torch): without
it the engine raises ImportError. torch itself has no cryptographically secure generator:
a `torch.Generator` is Mersenne Twister on CPU (Philox on CUDA).

Why not a torch.Generator seeded from os.urandom: it would stop replay from the config
seed, but it is not a CSPRNG. On CPU torch keeps only the low 32 bits of the seed
(`manual_seed(s)` and `manual_seed(s + 2**32)` draw the same numbers), so 2**32 guesses
find it; and Mersenne Twister is linear, so its state follows from 624 observed outputs.

What this module does instead: every random bit comes from a ChaCha20 keystream under a
fresh 256-bit key read from `os.urandom` for each draw (the construction the Linux kernel
uses behind getrandom; ChaCha20 only makes it fast enough for a gradient per step). From
those bits:

- `gaussian_noise`: Box-Muller in float64 on 53-bit uniforms, and, as Opacus does in
  secure_mode, the sum of four standard normals halved (Holohan et al. 2021, section
  5.1) against floating-point attacks on the noised values (Jin et al. 2022).
- `CSPRNGPoissonSampler`: each row is in each batch when a 53-bit uniform falls below the
  sample rate, i.e. Opacus' UniformWithReplacementSampler with the OS as the source.

`use_os_csprng` puts both into an Opacus session (DPOptimizer.add_noise and the
DPDataLoader's batch sampler). torch's global generator is not touched: torch.manual_seed
still makes data order and dropout reproducible, and cannot reproduce the noise.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from opacus.data_loader import DPDataLoader
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from opacus.utils.uniform_sampler import UniformWithReplacementSampler

from fedveil.errors import ConfigError

_KEY_BYTES = 32
_NONCE = bytes(16)  # ChaCha20 counter and nonce: zero is safe, every key is used once
_MANTISSA = 53  # bits of a float64 uniform


def random_bytes(count: int) -> bytes:
    """`count` bytes of ChaCha20 keystream under a fresh key from os.urandom."""
    if count <= 0:
        return b""
    encryptor = Cipher(algorithms.ChaCha20(os.urandom(_KEY_BYTES), _NONCE), mode=None).encryptor()
    return encryptor.update(bytes(count))


def uniform(count: int) -> torch.Tensor:
    """`count` float64 uniforms k / 2**53 in [0, 1), k uniform in [0, 2**53)."""
    if count <= 0:
        return torch.zeros(0, dtype=torch.float64)
    words = torch.frombuffer(bytearray(random_bytes(8 * count)), dtype=torch.int64)
    low_bits = words & ((1 << _MANTISSA) - 1)  # non-negative: no sign bit kept
    return low_bits.to(torch.float64).mul_(2.0**-_MANTISSA)


def standard_normal(count: int) -> torch.Tensor:
    """`count` float64 standard normals (Box-Muller: both the cosine and the sine)."""
    pairs = (count + 1) // 2
    u = uniform(2 * pairs)
    radius = torch.sqrt(-2.0 * torch.log1p(-u[:pairs]))  # 1 - u lies in (0, 1]
    angle = (2.0 * math.pi) * u[pairs:]
    return torch.cat((radius * torch.cos(angle), radius * torch.sin(angle)))[:count]


def gaussian_noise(std: float, reference: torch.Tensor) -> torch.Tensor:
    """N(0, std^2) noise shaped, typed and placed like `reference`, from the OS CSPRNG;
    each value is the sum of four standard normals halved (Opacus' secure_mode recipe)."""
    if std == 0:
        return torch.zeros_like(reference)
    size = reference.numel()
    summed = standard_normal(4 * size).view(4, size).sum(dim=0).mul_(std / 2.0)
    return summed.view(reference.shape).to(device=reference.device, dtype=reference.dtype)


class CSPRNGPoissonSampler(UniformWithReplacementSampler):
    """Opacus' Poisson batch sampler, each row kept with probability sample_rate, with
    the inclusion coins drawn from the OS CSPRNG instead of a torch generator."""

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            mask = uniform(self.num_samples) < self.sample_rate
            yield mask.nonzero(as_tuple=False).reshape(-1).tolist()


class CSPRNGNoiseOptimizer(DPOptimizer):
    """Opacus' DPOptimizer (flat clipping, one process) with the noise from the OS CSPRNG.
    Only add_noise differs; Opacus' generator and secure_mode arguments are unused."""

    def add_noise(self) -> None:
        std = self.noise_multiplier * self.max_grad_norm
        for p in self.params:
            _check_processed_flag(p.summed_grad)
            p.grad = (p.summed_grad + gaussian_noise(std, p.summed_grad)).view_as(p)
            _mark_as_processed(p.summed_grad)


def use_os_csprng(optimizer: DPOptimizer, data_loader: DPDataLoader) -> None:
    """Switch an Opacus session's noise and Poisson sampling to the OS CSPRNG, in place.

    Why in place (a class switch on objects Opacus built): Opacus takes its randomness
    only as a torch.Generator, and torch has no secure one; everything else Opacus set
    up (hooks, clipping, the accountant's step hook, the empty-batch collate) is kept."""
    if type(optimizer) is not DPOptimizer:
        raise ConfigError(
            f"OS-CSPRNG noise supports Opacus' DPOptimizer (flat clipping, one process), "
            f"got {type(optimizer).__name__}"
        )
    sampler = data_loader.batch_sampler
    if not isinstance(data_loader, DPDataLoader) or type(sampler) is not (
        UniformWithReplacementSampler
    ):
        raise ConfigError(
            "OS-CSPRNG sampling needs Opacus' Poisson data loader (poisson_sampling=True, "
            f"one process), got {type(data_loader).__name__} with {type(sampler).__name__}"
        )
    optimizer.__class__ = CSPRNGNoiseOptimizer
    optimizer.generator = None
    sampler.__class__ = CSPRNGPoissonSampler
    sampler.generator = None
