"""Client-level DP as a stack of small stages: clip -> rotate -> quantise -> noise -> (mask).

Why stages (like TFF's aggregation factories, e.g. DifferentiallyPrivateFactory over a
SecureSumFactory): each step has one job and one inverse on the aggregate, so a stack can
drop the rotation, swap the noise, or move the noise to the server without touching the
others, and each can be tested alone. Masking is the protocol's job (secagg.protocol):
the client hands `ClientEncoding.values` to it as its input vector.

    client:  L2ClipStage -> RotationStage -> QuantizeStage -> NoiseStage -> masked upload
    server:  ring sum -> QuantizeStage.decode -> [central noise] -> RotationStage.decode

Every client counts once (weight 1): weighting by example count would multiply the
sensitivity by the largest weight and make the weight element itself a per-client secret.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedveil.errors import ConfigError
from fedveil.secagg.dp.central import add_central_noise
from fedveil.secagg.dp.clipping import ClipResult, l2_clip
from fedveil.secagg.dp.config import ClientDPConfig, Mechanism, NoisePlacement
from fedveil.secagg.dp.events import DpEvent
from fedveil.secagg.dp.randomness import CryptoRandom
from fedveil.secagg.dp.rotation import RandomizedHadamard
from fedveil.secagg.dp.sampling import sample_discrete_gaussian, sample_skellam
from fedveil.secagg.quantize import (
    AggregateEstimate,
    QuantizationConfig,
    QuantizedUpdate,
    Ring,
    dequantize_sum,
    quantize,
)

MAX_ROUNDING_ATTEMPTS = 200
"""Conditional rounding is accepted with probability >= 1 - beta (>= 0.39 by default) per
draw; 200 failures in a row mean the configuration is wrong, not bad luck."""


class L2ClipStage:
    """Bounds one client's influence on the sum to clip_norm (L2). No inverse needed."""

    def __init__(self, clip_norm: float) -> None:
        self.clip_norm = clip_norm

    def encode(self, update: np.ndarray) -> ClipResult:
        return l2_clip(update, self.clip_norm)


class RotationStage:
    """Randomised Hadamard rotation so no coordinate carries more than its share."""

    def __init__(self, seed: bytes, dim: int) -> None:
        self.transform = RandomizedHadamard(seed, dim)

    def encode(self, x: np.ndarray) -> np.ndarray:
        return self.transform.forward(x)

    def decode(self, aggregate: np.ndarray) -> np.ndarray:
        return self.transform.inverse(aggregate)


class QuantizeStage:
    """Float vector -> ring vector (values, then weight 1) whose signed L2 norm is at most
    `norm_bound` levels: secagg.quantize's clip/scale/stochastic rounding, re-drawn until the
    norm bound holds (conditional rounding, Kairouz et al. 2021)."""

    def __init__(self, quantization: QuantizationConfig, norm_bound: float) -> None:
        self.quantization = quantization
        self.norm_bound = norm_bound

    def encode(self, x: np.ndarray, rng: CryptoRandom) -> tuple[QuantizedUpdate, int]:
        ring = self.quantization.ring
        d = x.shape[0]
        # The float sum of squares is within d * 2^-52 relative of the exact one; shrink the
        # acceptance threshold by that much so every accepted vector truly meets the bound.
        threshold = self.norm_bound**2 * (1.0 - d * 2.0**-52)
        for attempt in range(1, MAX_ROUNDING_ATTEMPTS + 1):
            quantized = quantize(x, 1, self.quantization, rounding_seed=rng.token())
            levels = ring.to_signed(quantized.values[:d]).astype(np.float64)
            if float(np.dot(levels, levels)) <= threshold:
                return quantized, attempt
        raise ConfigError(
            f"conditional rounding failed {MAX_ROUNDING_ATTEMPTS} times to keep the norm <= "
            f"{self.norm_bound:.6g} levels; rounding_beta is too small for this dimension"
        )

    def decode(self, ring_sum: np.ndarray, cohort_size: int) -> AggregateEstimate:
        estimate = dequantize_sum(ring_sum, self.quantization, cohort_size)
        if estimate.total_weight != cohort_size:
            raise ConfigError(
                f"the ring sum counts {estimate.total_weight} contributions but cohort_size is "
                f"{cohort_size}: every DP upload has weight 1, so the sum is not of "
                f"{cohort_size} valid uploads; discard the round"
            )
        return estimate


class NoiseStage:
    """Adds this client's share of integer noise to the ring values, in place."""

    def __init__(self, mechanism: Mechanism, variance: float, ring: Ring) -> None:
        self.mechanism = mechanism
        self.variance = variance
        self.ring = ring

    def sample(self, count: int, rng: CryptoRandom) -> np.ndarray:
        """`count` independent noise values (int64 levels)."""
        if self.variance == 0:
            return np.zeros(count, dtype=np.int64)
        if self.mechanism is Mechanism.DISCRETE_GAUSSIAN:
            return sample_discrete_gaussian(self.variance, count, rng)
        return sample_skellam(self.variance, count, rng)

    def encode(self, values: np.ndarray, count: int, rng: CryptoRandom) -> None:
        """values[:count] += noise (mod 2^m); the weight element after them is untouched."""
        if self.variance == 0:
            return
        noise = self.ring.from_signed(self.sample(count, rng))
        np.add(values[:count], noise, out=values[:count])
        self.ring.reduce(values)


@dataclass(frozen=True, eq=False)
class ClientEncoding:
    """What a client hands to the masking protocol, and what it may log locally.

    values: padded_dim noised ring values, then the weight 1 (length padded_dim + 1);
    clip / coordinates_clipped / rounding_attempts never leave the client.
    """

    values: np.ndarray
    clip: ClipResult
    coordinates_clipped: int
    rounding_attempts: int

    @property
    def quantized_update(self) -> QuantizedUpdate:
        """The values as the protocol's input type (shares the array, no copy)."""
        return QuantizedUpdate(values=self.values, clipped_count=self.coordinates_clipped)


@dataclass(frozen=True, eq=False)
class DPAggregate:
    """The server's decoded result.

    sum / mean: noised sum and mean of the clipped updates (length dim);
    noise_std: std of the DP noise in each coordinate of `mean`;
    rounding_error_l2: deterministic bound on the L2 norm of the rounding error in `mean`.
    """

    sum: np.ndarray
    mean: np.ndarray
    contributors: int
    noise_std: float
    rounding_error_l2: float


class ClientDPPipeline:
    """The stage stack of one round, built from its ClientDPConfig.

    rotation_seed: 32 bytes shared by all clients and the server of the round (derive it
    from the session id, e.g. HKDF with a "dp-rotation" label); required iff rotating.
    """

    def __init__(self, config: ClientDPConfig, rotation_seed: bytes | None = None) -> None:
        if not isinstance(config, ClientDPConfig):
            raise ConfigError(f"config must be a ClientDPConfig, got {type(config).__name__}")
        self.rotation: RotationStage | None = None
        if config.rotate:
            if rotation_seed is None:
                raise ConfigError(
                    "rotate=True needs a 32-byte rotation_seed shared by the round (derive it "
                    "from the session id)"
                )
            self.rotation = RotationStage(rotation_seed, config.dim)
        self.config = config
        quantization = config.quantization
        self.clip = L2ClipStage(config.clip_norm)
        self.quantize = QuantizeStage(quantization, config.l2_sensitivity)
        self.noise = NoiseStage(config.mechanism, config.client_noise_variance, quantization.ring)

    @property
    def upload_length(self) -> int:
        """Ring elements per client upload (the protocol's vector length)."""
        return self.config.padded_dim + 1

    def client_encode(self, update: np.ndarray, rng: CryptoRandom | None = None) -> ClientEncoding:
        """clip -> rotate -> quantise -> noise. `rng` defaults to a fresh OS-keyed one;
        pass one only for reproducible tests."""
        if update.shape != (self.config.dim,):
            raise ConfigError(
                f"update must have shape ({self.config.dim},), got {update.shape}; flatten "
                f"the adapter the same way on every client"
            )
        rng = CryptoRandom() if rng is None else rng
        clipped = self.clip.encode(update)
        x = self.rotation.encode(clipped.vector) if self.rotation else clipped.vector
        quantized, attempts = self.quantize.encode(x, rng)
        values = quantized.values
        self.noise.encode(values, self.config.padded_dim, rng)
        return ClientEncoding(
            values=values,
            clip=clipped,
            coordinates_clipped=quantized.clipped_count,
            rounding_attempts=attempts,
        )

    def server_decode(
        self, ring_sum: np.ndarray, cohort_size: int, rng: CryptoRandom | None = None
    ) -> DPAggregate:
        """Unmasked ring sum of cohort_size uploads -> noised sum and mean of the updates.

        With NoisePlacement.SERVER this is where the server adds the noise (central DP: see
        add_central_noise, which trusts the server); `rng` is used only then.
        """
        cfg = self.config
        if cfg.placement is NoisePlacement.CLIENTS and cohort_size < cfg.min_clients:
            raise ConfigError(
                f"only {cohort_size} uploads were summed but the noise was sized for at least "
                f"min_clients={cfg.min_clients}: this aggregate carries less noise than was "
                f"accounted; discard it (and keep the SecAgg threshold >= min_clients)"
            )
        estimate = self.quantize.decode(ring_sum, cohort_size)
        if cfg.placement is NoisePlacement.SERVER:
            signed = cfg.quantization.ring.to_signed(ring_sum[: cfg.padded_dim])
            weighted = add_central_noise(signed, cfg, rng).astype(np.float64)
            weighted /= cfg.effective_scale
            noise_variance = cfg.server_noise_variance
        else:
            weighted = estimate.weighted_sum
            noise_variance = cohort_size * cfg.client_noise_variance
        total = self.rotation.decode(weighted) if self.rotation else weighted
        contributors = estimate.total_weight
        return DPAggregate(
            sum=total,
            mean=total / contributors,
            contributors=contributors,
            noise_std=math.sqrt(noise_variance) / cfg.effective_scale / contributors,
            rounding_error_l2=estimate.error_bound * math.sqrt(cfg.padded_dim),
        )

    def events(self, sampling_prob: float = 1.0, steps: int = 1) -> tuple[DpEvent, ...]:
        """Privacy events of this round (see ClientDPConfig.events)."""
        return self.config.events(sampling_prob, steps)
