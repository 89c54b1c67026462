"""Privacy events: what a noise mechanism did, in a form an accountant can compose.

Why events (like dp_accounting's DpEvent): the code that adds noise should not also decide
how privacy composes across rounds; it states what it did (which mechanism, how much
noise relative to the sensitivity, with what sampling probability, how many times) and an
accountant (secagg.dp.accounting) turns a list of events into epsilon(delta).

Each event knows its own Renyi-DP curve, from the literature:
- GaussianEvent: the Poisson-subsampled Gaussian mechanism (Mironov et al. 2019), as
  computed in secagg.dp.gaussian_rdp; the PRV and PLD accountants treat it exactly.
- DistributedDiscreteGaussianEvent: the sum of n independent discrete Gaussians
  N_Z(0, sigma^2), Kairouz, Liu, Steinke (ICML 2021), Prop. 14 / Thm. 1:
      eps(a) = min{ a/2 l2^2 + tau d,  a/2 (l2^2 + 2 l1 tau + tau^2 d),  a/2 (l2 + sqrt(d) tau)^2 }
  with l_p = Delta_p / (sqrt(n) sigma) and tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k/(k+1)).
- SkellamEvent: Skellam noise of total variance mu (Agarwal, Kairouz, Liu, NeurIPS 2021,
  Thm. 3.5), for integer a > 1:
      eps(a) = a D2^2 / (2 mu) + min{ ((2a - 1) D2^2 + 6 D1) / (4 mu^2), 3 D1 / (2 mu) }
  with D1, D2 the L1 and L2 sensitivities.
For the discrete mechanisms, client sampling is accounted with the general Poisson-
subsampling RDP bound of Zhu and Wang (ICML 2019, Thm. 5), valid for any mechanism, at
integer orders. Sensitivities and sigma are in quantised levels.

`gaussian_equivalent()` gives, for each discrete event, the continuous Gaussian whose RDP
curve lies above the event's at every order (DDG: noise multiplier 1/(l2 + sqrt(d) tau);
Skellam: rho = Delta_2^2/(2 mu) + (Delta_2^2 + 3 Delta_1)/(2 mu^2), using (2a-1) <= 2a and
6 Delta_1 <= 6 a Delta_1). RDP-domination makes RDP accounting with it an upper bound; it
does *not* make PRV/PLD accounting of that Gaussian a proven bound for the discrete noise,
so the accountant only does that on request and then marks the result approximate.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import gammaln, logsumexp

from fedveil.errors import ConfigError
from fedveil.secagg.dp.gaussian_rdp import subsampled_gaussian_rdp

DEFAULT_ORDERS: tuple[float, ...] = (
    tuple(1 + x / 10 for x in range(1, 100))
    + tuple(float(a) for a in range(11, 65))
    + tuple(float(a) for a in range(68, 257, 4))
    + (288.0, 320.0, 384.0, 448.0, 512.0, 640.0, 768.0, 1024.0)
)
"""RDP orders: fractional below 11 (where the optimum lies for large epsilon), integers
above, up to 1024 for very small epsilon. The Zhu-Wang bound for discrete events is
computed at integer orders; at a fractional order a it uses the bound at ceil(a), valid
because Renyi divergence does not decrease with the order."""


def _number(value: object, name: str, *, low: float, high: float = math.inf) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float | np.integer | np.floating)
        or not math.isfinite(float(value))
        or not low <= float(value) <= high
    ):
        raise ConfigError(f"{name} must be a finite number in [{low}, {high}], got {value!r}")
    return float(value)


def _count(value: object, name: str, *, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_sampling(event: Any) -> None:
    q = _number(event.sampling_prob, "sampling_prob", low=0.0, high=1.0)
    object.__setattr__(event, "sampling_prob", q)
    object.__setattr__(event, "steps", _count(event.steps, "steps", low=0))


def poisson_subsampled_rdp(
    unsampled: np.ndarray, sampling_prob: float, orders: np.ndarray
) -> np.ndarray:
    """RDP of a mechanism run on a Poisson sample (rate q), from its RDP without sampling.

    Zhu & Wang 2019, Thm. 5 (general upper bound), for integer a >= 2:
      (a-1) eps'(a) <= log[ (1-q)^(a-1) (a q - q + 1) + C(a,2) q^2 (1-q)^(a-2) e^eps(2)
                            + 3 sum_{l=3}^{a} C(a,l) q^l (1-q)^(a-l) e^((l-1) eps(l)) ]
    and never worse than eps(a) itself. `unsampled[j]` is eps(j + 2) for j = 0..max order-2.
    """
    q = sampling_prob
    a = np.asarray(orders)
    if np.any(a != np.floor(a)) or np.any(a < 2):
        raise ConfigError(f"the Zhu-Wang bound needs integer orders >= 2, got {orders}")
    a = a.astype(np.int64)
    base = unsampled[a - 2]
    if q == 0:
        return np.zeros(a.shape[0])
    if q == 1:
        return base.astype(np.float64)
    # One row per order a, one column per l = 2..max(a); entries with l > a are masked.
    ls = np.arange(2, int(a.max()) + 1)
    col, row = ls[None, :], a[:, None]
    valid = col <= row
    safe_row = np.where(valid, row, col)  # keeps gammaln's arguments >= 1 where masked
    with np.errstate(invalid="ignore"):
        log_terms = (
            gammaln(safe_row + 1)
            - gammaln(col + 1)
            - gammaln(safe_row - col + 1)
            + col * math.log(q)
            + (safe_row - col) * math.log1p(-q)
            + (col - 1) * unsampled[ls - 2][None, :]
            + np.where(col >= 3, math.log(3.0), 0.0)
        )
    log_terms = np.where(valid, log_terms, -np.inf)
    first = (a - 1) * math.log1p(-q) + np.log(a * q - q + 1)
    total = logsumexp(np.concatenate([first[:, None], log_terms], axis=1), axis=1)
    bound = total / (a - 1)
    return np.where(np.isfinite(base), np.minimum(bound, base), base)


class DpEvent(abc.ABC):
    """One mechanism, applied `steps` times, each on a Poisson sample of rate sampling_prob."""

    sampling_prob: float
    steps: int
    real_orders = True
    """Whether `unsampled_rdp` holds at every real order > 1 (else integers only)."""

    @property
    @abc.abstractmethod
    def mechanism(self) -> str:
        """A short name for reports ("gaussian", "distributed_discrete_gaussian", "skellam")."""

    @abc.abstractmethod
    def nominal_noise_multiplier(self) -> float:
        """Total noise std / L2 sensitivity (for discrete noise: before the corrections that
        `gaussian_equivalent` applies)."""

    @abc.abstractmethod
    def unsampled_rdp(self, orders: np.ndarray) -> np.ndarray:
        """RDP of one application without sampling, at each (integer) order."""

    @abc.abstractmethod
    def gaussian_equivalent(self) -> GaussianEvent:
        """A continuous Gaussian event whose RDP curve is >= this event's at every order."""

    def rdp(self, orders: np.ndarray) -> np.ndarray:
        """RDP of all `steps` sampled applications (composition adds RDP)."""
        orders = np.asarray(orders, dtype=np.float64)
        if self.steps == 0 or self.sampling_prob == 0:
            return np.zeros(orders.shape[0])
        integer = np.maximum(np.ceil(orders), 2).astype(np.int64)
        if self.sampling_prob == 1:
            at = orders if self.real_orders else integer
            return self.unsampled_rdp(at) * self.steps
        full = self.unsampled_rdp(np.arange(2, int(integer.max()) + 1))
        return poisson_subsampled_rdp(full, self.sampling_prob, integer) * self.steps

    def to_dict(self) -> dict[str, float | int | str]:
        """Plain values for round results and JSON reports."""
        return {
            "mechanism": self.mechanism,
            "noise_multiplier": self.nominal_noise_multiplier(),
            "sampling_prob": self.sampling_prob,
            "steps": self.steps,
        }


@dataclass(frozen=True)
class GaussianEvent(DpEvent):
    """Continuous Gaussian noise of std noise_multiplier x (L2 sensitivity): DP-SGD steps,
    or a central-DP release."""

    noise_multiplier: float
    sampling_prob: float = 1.0
    steps: int = 1

    def __post_init__(self) -> None:
        z = _number(self.noise_multiplier, "noise_multiplier", low=0.0)
        object.__setattr__(self, "noise_multiplier", z)
        _check_sampling(self)

    @property
    def mechanism(self) -> str:
        return "gaussian"

    def nominal_noise_multiplier(self) -> float:
        return self.noise_multiplier

    def unsampled_rdp(self, orders: np.ndarray) -> np.ndarray:
        if self.noise_multiplier == 0:
            return np.full(np.asarray(orders).shape[0], np.inf)
        return np.asarray(orders, dtype=np.float64) / (2.0 * self.noise_multiplier**2)

    def rdp(self, orders: np.ndarray) -> np.ndarray:
        """Exact RDP of the subsampled Gaussian (Mironov et al. 2019, secagg.dp.gaussian_rdp),
        not the generic Zhu-Wang bound."""
        orders = np.asarray(orders, dtype=np.float64)
        if self.steps == 0 or self.sampling_prob == 0:
            return np.zeros(orders.shape[0])
        if self.noise_multiplier == 0:
            return np.full(orders.shape[0], np.inf)
        curve = subsampled_gaussian_rdp(self.sampling_prob, self.noise_multiplier, orders)
        return np.asarray(curve * self.steps, dtype=np.float64)

    def gaussian_equivalent(self) -> GaussianEvent:
        return self


@dataclass(frozen=True)
class DistributedDiscreteGaussianEvent(DpEvent):
    """num_clients honest clients each add N_Z(0, client_sigma^2) to a sum whose L2 / L1
    sensitivity (one client's rounded contribution, in levels) is given; dim coordinates."""

    client_sigma: float
    num_clients: int
    l2_sensitivity: float
    l1_sensitivity: float
    dim: int
    sampling_prob: float = 1.0
    steps: int = 1

    def __post_init__(self) -> None:
        sigma = _number(self.client_sigma, "client_sigma", low=0.0)
        if 0 < sigma < 0.5:
            raise ConfigError(
                f"client_sigma must be 0 or >= 0.5 levels (the distributed discrete Gaussian "
                f"bound needs it), got {sigma}; raise the quantisation scale"
            )
        object.__setattr__(self, "client_sigma", sigma)
        object.__setattr__(self, "num_clients", _count(self.num_clients, "num_clients"))
        for name in ("l2_sensitivity", "l1_sensitivity"):
            object.__setattr__(self, name, _number(getattr(self, name), name, low=0.0))
        object.__setattr__(self, "dim", _count(self.dim, "dim"))
        _check_sampling(self)

    @property
    def mechanism(self) -> str:
        return "distributed_discrete_gaussian"

    def nominal_noise_multiplier(self) -> float:
        if self.l2_sensitivity == 0:
            return math.inf
        return math.sqrt(self.num_clients) * self.client_sigma / self.l2_sensitivity

    @property
    def tau(self) -> float:
        """Kairouz et al.'s distance of the sum from one discrete Gaussian (0 for one client)."""
        s2 = self.client_sigma**2
        return 10.0 * sum(
            math.exp(-2.0 * math.pi**2 * s2 * k / (k + 1)) for k in range(1, self.num_clients)
        )

    def _scaled(self) -> tuple[float, float]:
        total = math.sqrt(self.num_clients) * self.client_sigma
        return self.l2_sensitivity / total, self.l1_sensitivity / total

    def unsampled_rdp(self, orders: np.ndarray) -> np.ndarray:
        a = np.asarray(orders, dtype=np.float64)
        if self.client_sigma == 0:
            return np.full(a.shape[0], np.inf)
        l2, l1 = self._scaled()
        tau, d = self.tau, self.dim
        t1 = a / 2 * l2**2 + tau * d
        t2 = a / 2 * (l2**2 + 2 * l1 * tau + tau**2 * d)
        t3 = a / 2 * (l2 + math.sqrt(d) * tau) ** 2
        return np.minimum(np.minimum(t1, t2), t3)

    def gaussian_equivalent(self) -> GaussianEvent:
        if self.client_sigma == 0:
            z = 0.0
        else:
            l2, _ = self._scaled()
            z = 1.0 / (l2 + math.sqrt(self.dim) * self.tau)
        return GaussianEvent(z, self.sampling_prob, self.steps)


@dataclass(frozen=True)
class SkellamEvent(DpEvent):
    """num_clients honest clients each add Skellam noise of variance client_variance
    (Poisson(v/2) - Poisson(v/2)) per coordinate; the sum is Skellam of variance n v."""

    real_orders = False  # Agarwal et al. state the bound for integer orders

    client_variance: float
    num_clients: int
    l2_sensitivity: float
    l1_sensitivity: float
    sampling_prob: float = 1.0
    steps: int = 1

    def __post_init__(self) -> None:
        v = _number(self.client_variance, "client_variance", low=0.0)
        object.__setattr__(self, "client_variance", v)
        object.__setattr__(self, "num_clients", _count(self.num_clients, "num_clients"))
        for name in ("l2_sensitivity", "l1_sensitivity"):
            object.__setattr__(self, name, _number(getattr(self, name), name, low=0.0))
        _check_sampling(self)

    @property
    def mechanism(self) -> str:
        return "skellam"

    @property
    def total_variance(self) -> float:
        return self.num_clients * self.client_variance

    def nominal_noise_multiplier(self) -> float:
        if self.l2_sensitivity == 0:
            return math.inf
        return math.sqrt(self.total_variance) / self.l2_sensitivity

    def unsampled_rdp(self, orders: np.ndarray) -> np.ndarray:
        a = np.asarray(orders, dtype=np.float64)
        mu = self.total_variance
        if mu == 0:
            return np.full(a.shape[0], np.inf)
        d2, d1 = self.l2_sensitivity**2, self.l1_sensitivity
        extra = np.minimum(((2 * a - 1) * d2 + 6 * d1) / (4 * mu**2), 3 * d1 / (2 * mu))
        return a * d2 / (2 * mu) + extra

    def gaussian_equivalent(self) -> GaussianEvent:
        mu = self.total_variance
        if mu == 0:
            return GaussianEvent(0.0, self.sampling_prob, self.steps)
        d2, d1 = self.l2_sensitivity**2, self.l1_sensitivity
        rho = d2 / (2 * mu) + (d2 + 3 * d1) / (2 * mu**2)
        return GaussianEvent(1.0 / math.sqrt(2 * rho), self.sampling_prob, self.steps)
