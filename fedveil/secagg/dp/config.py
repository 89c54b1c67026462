"""Client-level DP configuration: noise sizing and the ring bounds it must respect.

Why one frozen config shared by the round: every client must clip, rotate, scale and
noise the same way, and the server must decode with the same numbers, so they all derive
from one validated value (like QuantizationConfig, which this builds on).

Units: sensitivities, noise std and variances are in quantised *levels* (one level =
1/scale of an update unit), because that is where the noise is added. One client's
contribution after clipping to C, scaling by `scale` and stochastic rounding has L2 norm
at most Delta_2 = min(C s + sqrt(D), sqrt((C s)^2 + D/4 + sqrt(2 ln(1/beta)) (C s + sqrt(D)/2)))
(Kairouz, Liu, Steinke 2021: conditional rounding re-draws the rounding until the bound
holds, which one draw does with probability >= 1 - beta). The target noise is

    aggregate noise std = noise_multiplier x Delta_2   (~ noise_multiplier x C x scale)

carried by the noise of any `min_clients` honest clients together, so each client adds
variance (noise_multiplier Delta_2)^2 / min_clients. More clients only add more noise.

Ring bound: the masked sum is correct only if every coordinate of
sum(values) + sum(noise) stays in [-2^(m-1), 2^(m-1) - 1]. Values are bounded by
clipping; noise is unbounded, so the config requires
    max_cohort (coordinate_clip x scale + 1) + t <= 2^(m-1) - 1
where t is a tail bound that the noise of max_cohort clients exceeds in *some* of the D
coordinates with probability <= overflow_prob (sub-Gaussian tail for the discrete
Gaussian, Bernstein's for Skellam; union over coordinates). With scale=None the largest
scale meeting it is derived.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from fedveil.errors import ConfigError, RingOverflowError
from fedveil.secagg.dp.clipping import check_clip_norm
from fedveil.secagg.dp.events import DistributedDiscreteGaussianEvent, DpEvent, SkellamEvent
from fedveil.secagg.dp.rotation import padded_length
from fedveil.secagg.dp.sampling import MAX_SIGMA
from fedveil.secagg.quantize import QuantizationConfig, Ring
from fedveil.secagg.quantize.fixed_point import MAX_DERIVED_LEVELS


class Mechanism(enum.Enum):
    """Integer noise added in the ring."""

    DISCRETE_GAUSSIAN = "discrete_gaussian"
    SKELLAM = "skellam"


class NoisePlacement(enum.Enum):
    """Who adds the noise: each client (distributed DP) or the server (central DP)."""

    CLIENTS = "clients"
    SERVER = "server"


MAX_NORM_LEVELS_X_DIM = 2.0**48
"""Cap on (clip_norm x scale) x padded_dim. Conditional rounding compares a float64 sum of
D squares, of size (C s)^2, against the norm bound, whose slack over (C s)^2 is about
C s (Kairouz et al.'s sqrt(2 ln(1/beta)) (C s + sqrt(D)/2) term); the comparison is
shrunk by D 2^-52 relative to be exact, so the slack must exceed D 2^-52 (C s)^2, i.e.
C s D < 2^52. Past that, no rounding is ever accepted (seen at D = 2^20 with the scale
central DP or zero noise derives). 2^48 keeps a factor 16 of margin."""

DEFAULT_ROUNDING_BETA = math.exp(-0.5)
"""Kairouz et al.'s default: a rounding is re-drawn with probability < 0.61 (in practice
almost never), and the norm bound grows by about sqrt(D)/2 instead of sqrt(D)."""


def rounded_l2_bound(norm: float, dim: int, beta: float) -> float:
    """L2 norm bound of a stochastically rounded vector of norm <= `norm` (levels)."""
    deterministic = norm + math.sqrt(dim)
    if beta == 0:
        return deterministic
    squared = norm**2 + dim / 4 + math.sqrt(2 * math.log(1 / beta)) * (norm + math.sqrt(dim) / 2)
    return min(deterministic, math.sqrt(squared))


def noise_tail(variance: float, mechanism: Mechanism, failure_prob: float) -> float:
    """t with P(|noise| > t) <= failure_prob for a sum of independent noise of this variance.

    Discrete Gaussian shares are sigma-sub-Gaussian (Canonne et al. 2020), so their sum is
    sub-Gaussian with the summed variance: t = sqrt(2 V ln(2/p)). Skellam is a sum of +-1
    jumps: Bernstein gives P(|S| >= t) <= 2 exp(-t^2 / (2 (V + t/3))), solved for t.
    """
    if variance == 0:
        return 0.0
    log_term = math.log(2 / failure_prob)
    if mechanism is Mechanism.DISCRETE_GAUSSIAN:
        return math.sqrt(2 * variance * log_term)
    return log_term / 3 + math.sqrt(log_term**2 / 9 + 2 * variance * log_term)


def _real(value: object, name: str, low: float, high: float, *, open_low: bool = False) -> float:
    bracket = "(" if open_low else "["
    bad = ConfigError(f"{name} must be a number in {bracket}{low}, {high}], got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise bad
    v = float(value)
    if not math.isfinite(v) or not (v > low if open_low else v >= low) or v > high:
        raise bad
    return v


def _integer(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class ClientDPConfig:
    """Client-level DP for one round: clip to L2 <= clip_norm, optionally rotate, quantise
    into Z_{2^bits}, add integer noise (clients or server), account per round.

    noise_multiplier: aggregate noise std / L2 sensitivity (both in levels), reached by
        the noise of min_clients honest clients; 0 disables noise (tests only).
    min_clients: the fewest honest, noise-adding clients any aggregate has (n_min): count
        dropouts and clients that may collude with the server out of it.
    max_cohort: the most clients ever summed (ring bound).
    dim: the update's length before padding.
    """

    clip_norm: float
    noise_multiplier: float
    min_clients: int
    max_cohort: int
    dim: int
    bits: int = 32
    mechanism: Mechanism = Mechanism.DISCRETE_GAUSSIAN
    placement: NoisePlacement = NoisePlacement.CLIENTS
    rotate: bool = True
    scale: float | None = None
    rounding_beta: float = DEFAULT_ROUNDING_BETA
    coordinate_clip_prob: float = 1e-6
    overflow_prob: float = 1e-9
    _scale: float = field(default=0.0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "clip_norm", check_clip_norm(self.clip_norm))
        z = _real(self.noise_multiplier, "noise_multiplier", 0.0, 1e6)
        object.__setattr__(self, "noise_multiplier", z)
        for name, low in (("min_clients", 1), ("max_cohort", 1), ("dim", 1)):
            object.__setattr__(self, name, _integer(getattr(self, name), name, low))
        if self.min_clients > self.max_cohort:
            raise ConfigError(
                f"min_clients={self.min_clients} exceeds max_cohort={self.max_cohort}: the "
                f"noise of min_clients clients can never be present in one round"
            )
        if not isinstance(self.mechanism, Mechanism):
            raise ConfigError(f"mechanism must be a Mechanism, got {self.mechanism!r}")
        if not isinstance(self.placement, NoisePlacement):
            raise ConfigError(f"placement must be a NoisePlacement, got {self.placement!r}")
        object.__setattr__(self, "bits", Ring(self.bits).bits)
        object.__setattr__(
            self, "rounding_beta", _real(self.rounding_beta, "rounding_beta", 0.0, 0.99)
        )
        for name in ("coordinate_clip_prob", "overflow_prob"):
            value = _real(getattr(self, name), name, 0.0, 0.5, open_low=True)
            object.__setattr__(self, name, value)
        if self.scale is None:
            scale = self._derive_scale()
        else:
            scale = _real(self.scale, "scale", 0.0, math.inf, open_low=True)
            object.__setattr__(self, "scale", scale)
            self._check_ring(scale)
        object.__setattr__(self, "_scale", scale)
        sigma = math.sqrt(self.client_noise_variance)
        if 0 < sigma < 0.5:
            raise ConfigError(
                f"each client's noise std is {sigma:.3g} levels < 0.5 (the distributed "
                f"discrete Gaussian bound needs >= 0.5): raise scale or noise_multiplier, or "
                f"lower min_clients"
            )

    # --- geometry ----------------------------------------------------------------------

    @property
    def padded_dim(self) -> int:
        """Coordinates actually quantised and noised: next power of two if rotating."""
        return padded_length(self.dim) if self.rotate else self.dim

    @property
    def coordinate_clip(self) -> float:
        """Per-coordinate clip after rotation: C itself without rotation (never binding),
        else C sqrt(2 ln(2D/p) / D), exceeded anywhere with probability <= p."""
        if not self.rotate:
            return self.clip_norm
        d = self.padded_dim
        bound = self.clip_norm * math.sqrt(2 * math.log(2 * d / self.coordinate_clip_prob) / d)
        return min(self.clip_norm, bound)

    # --- noise sizing (levels) ---------------------------------------------------------

    @property
    def effective_scale(self) -> float:
        """Levels per update unit: the given scale, or the largest the ring allows."""
        return self._scale

    def _sensitivity(self, scale: float) -> float:
        return rounded_l2_bound(self.clip_norm * scale, self.padded_dim, self.rounding_beta)

    @property
    def l2_sensitivity(self) -> float:
        """Max L2 norm (levels) of one client's rounded contribution: the rounding bound."""
        return self._sensitivity(self._scale)

    @property
    def l1_sensitivity(self) -> float:
        """L1 <= sqrt(D) L2 always, and <= L2^2 for integer vectors."""
        l2 = self.l2_sensitivity
        return l2 * min(math.sqrt(self.padded_dim), l2)

    @property
    def aggregate_noise_std(self) -> float:
        """Noise std per coordinate (levels) of a sum over exactly min_clients clients (or
        of the server's noise): noise_multiplier x l2_sensitivity."""
        return self.noise_multiplier * self.l2_sensitivity

    @property
    def client_noise_variance(self) -> float:
        """Per-coordinate noise variance (levels^2) each client adds; 0 if the server adds it."""
        if self.placement is NoisePlacement.SERVER:
            return 0.0
        return self.aggregate_noise_std**2 / self.min_clients

    @property
    def server_noise_variance(self) -> float:
        """Variance the server adds after unmasking (central DP only)."""
        return self.aggregate_noise_std**2 if self.placement is NoisePlacement.SERVER else 0.0

    @property
    def noise_std(self) -> float:
        """The target noise std in update units (~ noise_multiplier x clip_norm)."""
        return self.aggregate_noise_std / self._scale

    @property
    def quantization(self) -> QuantizationConfig:
        """The plain quantisation this config runs (weight fixed to 1 per client)."""
        return QuantizationConfig(
            clip=self.coordinate_clip,
            bits=self.bits,
            max_cohort=self.max_cohort,
            max_weight=1,
            scale=self._scale,
        )

    def events(self, sampling_prob: float = 1.0, steps: int = 1) -> tuple[DpEvent, ...]:
        """The privacy events of `steps` rounds, each over clients sampled at this rate.

        Accounted with min_clients' noise only (client placement): the guarantee holds
        whichever clients drop out or collude, as long as min_clients honest ones remain.
        """
        central = self.placement is NoisePlacement.SERVER
        n = 1 if central else self.min_clients
        variance = self.server_noise_variance if central else self.client_noise_variance
        if self.mechanism is Mechanism.DISCRETE_GAUSSIAN:
            return (
                DistributedDiscreteGaussianEvent(
                    client_sigma=math.sqrt(variance),
                    num_clients=n,
                    l2_sensitivity=self.l2_sensitivity,
                    l1_sensitivity=self.l1_sensitivity,
                    dim=self.padded_dim,
                    sampling_prob=sampling_prob,
                    steps=steps,
                ),
            )
        return (
            SkellamEvent(
                client_variance=variance,
                num_clients=n,
                l2_sensitivity=self.l2_sensitivity,
                l1_sensitivity=self.l1_sensitivity,
                sampling_prob=sampling_prob,
                steps=steps,
            ),
        )

    def to_dict(self) -> dict[str, float | int | str | bool]:
        """The round-config fields and derived numbers, for round results and reports."""
        return {
            "clip_norm": self.clip_norm,
            "noise_multiplier": self.noise_multiplier,
            "min_clients": self.min_clients,
            "max_cohort": self.max_cohort,
            "dim": self.dim,
            "bits": self.bits,
            "mechanism": self.mechanism.value,
            "placement": self.placement.value,
            "rotate": self.rotate,
            "scale": self._scale,
            "l2_sensitivity_levels": self.l2_sensitivity,
            "noise_std": self.noise_std,
        }

    # --- ring bound --------------------------------------------------------------------

    def _ring_terms(self, scale: float) -> tuple[Fraction, float]:
        """(value-sum bound, exact; noise tail) in levels for a cohort of max_cohort."""
        values = self.max_cohort * (Fraction(self.coordinate_clip) * Fraction(scale) + 1)
        if self.placement is NoisePlacement.SERVER:
            return values, 0.0  # the server adds its noise after lifting to int64
        variance = self.max_cohort * (self.noise_multiplier * self._sensitivity(scale)) ** 2
        variance /= self.min_clients
        tail = noise_tail(variance, self.mechanism, self.overflow_prob / self.padded_dim)
        return values, tail

    def _client_sigma(self, scale: float) -> float:
        return self.noise_multiplier * self._sensitivity(scale) / math.sqrt(self.min_clients)

    def _fits(self, scale: float) -> bool:
        values, tail = self._ring_terms(scale)
        return (
            values + Fraction(tail) <= (1 << (self.bits - 1)) - 1
            and self.coordinate_clip * scale <= MAX_DERIVED_LEVELS
            and self.clip_norm * scale * self.padded_dim <= MAX_NORM_LEVELS_X_DIM
            and self._client_sigma(scale) * math.sqrt(self.min_clients) <= MAX_SIGMA
        )

    def _check_ring(self, scale: float) -> None:
        if self.clip_norm * scale * self.padded_dim > MAX_NORM_LEVELS_X_DIM:
            raise ConfigError(
                f"clip_norm * scale * padded_dim = {self.clip_norm * scale * self.padded_dim:.4g}"
                f" exceeds 2^48: float64 cannot check the rounded norm bound that finely, so "
                f"conditional rounding would never succeed; lower scale (or scale=None)"
            )
        limit = (1 << (self.bits - 1)) - 1
        values, tail = self._ring_terms(scale)
        if values + Fraction(tail) > limit:
            raise RingOverflowError(
                f"noised value-sum bound fails: max_cohort * (coordinate_clip * scale + 1) + "
                f"noise tail = {self.max_cohort} * ({self.coordinate_clip:.6g} * {scale:.6g} + "
                f"1) + {tail:.6g} = {float(values) + tail:.6g} > 2^(bits-1) - 1 = {limit} for "
                f"bits={self.bits} (the tail is exceeded with probability "
                f"{self.overflow_prob:g} per round); use a smaller scale (or scale=None to "
                f"derive it), or raise bits, or lower max_cohort or noise_multiplier, or "
                f"raise min_clients"
            )
        if self._client_sigma(scale) * math.sqrt(self.min_clients) > MAX_SIGMA:
            raise ConfigError(
                f"aggregate noise std {self._client_sigma(scale) * math.sqrt(self.min_clients):.4g}"
                f" levels exceeds the samplers' limit 2^40: lower scale"
            )

    def _derive_scale(self) -> float:
        c = self.coordinate_clip
        low = 1.0 / c  # one level per coordinate clip: the least useful resolution
        if not self._fits(low):
            values, tail = self._ring_terms(low)
            raise RingOverflowError(
                f"noised value-sum bound fails even at the coarsest useful scale "
                f"(coordinate_clip * scale = 1 level): max_cohort * 2 + noise tail = "
                f"{float(values):.6g} + {tail:.6g} > 2^(bits-1) - 1 = {(1 << (self.bits - 1)) - 1} "
                f"for bits={self.bits}; raise bits, or lower max_cohort or noise_multiplier, "
                f"or raise min_clients"
            )
        high = ((1 << (self.bits - 1)) - 1) / (self.max_cohort * c)
        if self._fits(high):
            return high
        for _ in range(200):  # bisection in log space; the bound is monotone in scale
            mid = math.sqrt(low * high)
            if self._fits(mid):
                low = mid
            else:
                high = mid
            if high / low < 1 + 1e-12:
                break
        return low
