"""The accountant: composes privacy events and answers epsilon(delta).

Why apart from the noise code (like dp_accounting): one mechanism can be accounted several
ways, and the accounting method is a policy choice (tightness vs. what is proven), not a
property of the noise. The noise stages emit events (secagg.dp.events); an accountant
composes any sequence of them.

Methods:
- "prv" (default): the PRV accountant (Gopi, Lee, Wutschitz 2021), numerically tight for
  the subsampled Gaussian; returns its upper estimate. secagg has no PRV implementation of
  its own: the numerical accountant comes from Opacus, which imports torch, so it is a
  backend found by entry point (see `PrvBackend`): fedveil.learner.prv
  installs Opacus' as the process default when fedveil.clients is imported, and
  PrivacyAccountant(prv_backend=...) takes one explicitly.
- "pld": dp_accounting's PLD accountant (pessimistic discretisation), also tight.
- "rdp": Renyi DP at integer orders, converted with Balle et al. (2020)'s bound via
  dp_accounting; looser, but the only method with proven bounds for the discrete noise.

Discrete events (distributed discrete Gaussian, Skellam) have RDP bounds only, so a
"prv"/"pld" accountant that holds any of them answers with RDP for the whole composition
and says so in its report. With `discrete_as_gaussian=True` it instead accounts each as
its RDP-dominating Gaussian through PRV/PLD: tighter, what published systems commonly do,
but not a proof; the report then has rigorous=False.
"""

from __future__ import annotations

import enum
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import TypeAlias, TypeVar

import numpy as np

from fedveil.errors import ConfigError
from fedveil.secagg.dp.events import DEFAULT_ORDERS, DpEvent, GaussianEvent

PrvBackend: TypeAlias = Callable[[Sequence[tuple[float, float, int]], float, float], float]
"""epsilon(history, delta, eps_error) of a PRV accountant, where history lists
(noise_multiplier, sampling_prob, steps) of Poisson-subsampled Gaussian steps and
eps_error is the accountant's allowed error; it returns the upper estimate of epsilon.

Why injected: the PRV accountant we use is Opacus', and secagg, the pure core, imports
neither opacus nor torch (issue 16). fedveil.learner.prv provides Opacus' as a backend."""

PRV_BACKEND_GROUP = "fedveil.prv_backends"
"""The entry-point group a distribution declares its PRV backend under. fedveil's own
pyproject declares Opacus' (fedveil.learner.prv:opacus_prv_epsilon): found by name when an
epsilon is asked, not installed by importing some package first."""


def installed_prv_backend() -> PrvBackend | None:
    """The PRV backend declared under PRV_BACKEND_GROUP (the first, by entry-point name),
    or None when no installed distribution declares one."""
    points = sorted(metadata.entry_points(group=PRV_BACKEND_GROUP), key=lambda p: p.name)
    if not points:
        return None
    backend: PrvBackend = points[0].load()
    return backend


class AccountingMethod(enum.Enum):
    PRV = "prv"
    PLD = "pld"
    RDP = "rdp"


@dataclass(frozen=True)
class EpsilonReport:
    """epsilon at delta, the method that produced it, and whether it is a proven bound."""

    epsilon: float
    delta: float
    method: AccountingMethod
    rigorous: bool
    note: str = ""

    def to_dict(self) -> dict[str, float | str | bool]:
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "accountant": self.method.value,
            "rigorous": self.rigorous,
            "note": self.note,
        }


def check_delta(delta: object) -> float:
    if (
        isinstance(delta, bool)
        or not isinstance(delta, int | float | np.floating)
        or not 0 < float(delta) < 1
    ):
        raise ConfigError(
            f"delta must be a number in (0, 1), got {delta!r}; use about 1/(number of "
            f"records or clients protected), e.g. 1e-5"
        )
    return float(delta)


def _method(method: AccountingMethod | str) -> AccountingMethod:
    try:
        return AccountingMethod(method) if isinstance(method, str) else AccountingMethod(method)
    except ValueError:
        names = ", ".join(repr(m.value) for m in AccountingMethod)
        raise ConfigError(f"accounting method must be one of {names}, got {method!r}") from None


class PrivacyAccountant:
    """Holds a sequence of events; `epsilon(delta)` composes them with the chosen method."""

    def __init__(
        self,
        method: AccountingMethod | str = AccountingMethod.PRV,
        *,
        discrete_as_gaussian: bool = False,
        orders: Sequence[float] = DEFAULT_ORDERS,
        prv_eps_error: float = 0.01,
        pld_discretization: float = 1e-4,
        prv_backend: PrvBackend | None = None,
    ) -> None:
        self.method = _method(method)
        self.prv_backend = prv_backend
        self.discrete_as_gaussian = bool(discrete_as_gaussian)
        if not orders or any(isinstance(a, bool) or not a > 1 for a in orders):
            raise ConfigError(f"RDP orders must be numbers > 1, got {orders!r}")
        self.orders = tuple(float(a) for a in orders)
        self.prv_eps_error = prv_eps_error
        self.pld_discretization = pld_discretization
        self._events: list[DpEvent] = []
        # RDP curves per distinct event (events are frozen, hashable values); shared with
        # `extended` copies, so a ledger's per-round previews recompute nothing old.
        self._rdp_cache: dict[DpEvent, np.ndarray] = {}

    @property
    def events(self) -> tuple[DpEvent, ...]:
        return tuple(self._events)

    def compose(self, event: DpEvent, count: int = 1) -> None:
        """Record `event` happening `count` more times (e.g. once per round)."""
        if not isinstance(event, DpEvent):
            raise ConfigError(f"compose takes a DpEvent, got {type(event).__name__}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ConfigError(f"count must be an integer >= 0, got {count!r}")
        self._events.extend([event] * count)

    def extended(self, events: Iterable[DpEvent]) -> PrivacyAccountant:
        """A copy with `events` appended (for "what if I take part" previews)."""
        other = PrivacyAccountant(
            self.method,
            discrete_as_gaussian=self.discrete_as_gaussian,
            orders=self.orders,
            prv_eps_error=self.prv_eps_error,
            pld_discretization=self.pld_discretization,
            prv_backend=self.prv_backend,
        )
        other._events = [*self._events]
        other._rdp_cache = self._rdp_cache
        for event in events:
            other.compose(event)
        return other

    def epsilon(self, delta: float) -> float:
        return self.report(delta).epsilon

    def report(self, delta: float) -> EpsilonReport:
        delta = check_delta(delta)
        events = [e for e in self._events if e.steps > 0 and e.sampling_prob > 0]
        discrete = [e for e in events if not isinstance(e, GaussianEvent)]
        method, rigorous, note = self.method, True, ""
        if discrete and method is not AccountingMethod.RDP:
            if self.discrete_as_gaussian:
                rigorous = False
                note = (
                    f"{len(discrete)} discrete-noise event(s) accounted as their RDP-dominating "
                    f"Gaussian with {method.value}: an approximation, not a proven bound"
                )
                events = [e.gaussian_equivalent() for e in events]
            else:
                note = (
                    f"{len(discrete)} discrete-noise event(s) have RDP bounds only; "
                    f"the whole composition was accounted with rdp instead of {method.value}"
                )
                method = AccountingMethod.RDP
        if not events:
            eps = 0.0
        elif any(_no_noise(e) for e in events):
            eps = math.inf
        elif method is AccountingMethod.RDP:
            eps = self._rdp_epsilon(events, delta)
        elif method is AccountingMethod.PRV:
            eps = self._prv_epsilon([e.gaussian_equivalent() for e in events], delta)
        else:
            eps = self._pld_epsilon([e.gaussian_equivalent() for e in events], delta)
        return EpsilonReport(epsilon=eps, delta=delta, method=method, rigorous=rigorous, note=note)

    # --- methods -----------------------------------------------------------------------

    # dp_accounting is imported where used: it is slow to import, which a server that
    # never accounts should not pay.

    def _rdp_epsilon(self, events: Sequence[DpEvent], delta: float) -> float:
        from dp_accounting.rdp import rdp_privacy_accountant

        orders = np.array(self.orders)
        total = np.zeros(orders.shape[0])
        for event, count in _grouped(events):
            curve = self._rdp_cache.get(event)
            if curve is None:
                curve = self._rdp_cache[event] = event.rdp(orders)
            total += count * curve
        eps, _ = rdp_privacy_accountant.compute_epsilon(orders, total, delta)
        return float(eps)

    def _prv_epsilon(self, events: Sequence[GaussianEvent], delta: float) -> float:
        backend = self.prv_backend or installed_prv_backend()
        if backend is None:
            raise ConfigError(
                "the prv accountant needs a PRV backend and none is installed: reinstall "
                f"fedveil (it declares Opacus' under the {PRV_BACKEND_GROUP!r} entry points), "
                "pass PrivacyAccountant(prv_backend=...), or account with pld or rdp"
            )
        history = [
            (e.noise_multiplier, e.sampling_prob, e.steps * count) for e, count in _grouped(events)
        ]
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(backend(history, delta, self.prv_eps_error))

    def _pld_epsilon(self, events: Sequence[GaussianEvent], delta: float) -> float:
        import dp_accounting
        from dp_accounting.pld import pld_privacy_accountant

        accountant = pld_privacy_accountant.PLDAccountant(
            value_discretization_interval=self.pld_discretization
        )
        for e, count in _grouped(events):
            gaussian = dp_accounting.GaussianDpEvent(e.noise_multiplier)
            event: dp_accounting.DpEvent = (
                gaussian
                if e.sampling_prob == 1
                else dp_accounting.PoissonSampledDpEvent(e.sampling_prob, gaussian)
            )
            accountant.compose(event, e.steps * count)
        return float(accountant.get_epsilon(delta))


def _no_noise(event: DpEvent) -> bool:
    return math.isinf(float(event.unsampled_rdp(np.array([2]))[0]))


_E = TypeVar("_E", bound=DpEvent)


def _grouped(events: Sequence[_E]) -> list[tuple[_E, int]]:
    """Equal consecutive events merged with a count (rounds repeat one event)."""
    groups: list[tuple[_E, int]] = []
    for event in events:
        if groups and groups[-1][0] == event:
            groups[-1] = (event, groups[-1][1] + 1)
        else:
            groups.append((event, 1))
    return groups


def calibrate_noise_multiplier(
    events_for: Callable[[float], Sequence[DpEvent]],
    target_epsilon: float,
    delta: float,
    *,
    method: AccountingMethod | str = AccountingMethod.PRV,
    low: float = 0.05,
    high: float = 200.0,
    rel_tol: float = 1e-3,
) -> float:
    """The smallest noise multiplier z (to rel_tol) whose whole-run events stay within
    target_epsilon at delta.

    events_for(z) returns the events of the *whole run* at noise multiplier z, e.g.
    `lambda z: replace(dp_config, noise_multiplier=z).events(q, steps=rounds)`. Epsilon
    falls as z grows, so this bisects and errs on the side of more noise. The search is
    bracketed with RDP first (stable at any z), then refined with `method` below the RDP
    answer: the numerical PRV/PLD accountants can need huge grids far from the answer.
    """
    if not isinstance(target_epsilon, int | float) or not 0 < target_epsilon < math.inf:
        raise ConfigError(f"target_epsilon must be a finite number > 0, got {target_epsilon!r}")
    delta = check_delta(delta)
    chosen = _method(method)

    def report(z: float, how: AccountingMethod) -> EpsilonReport:
        accountant = PrivacyAccountant(how)
        for event in events_for(z):
            accountant.compose(event)
        return accountant.report(delta)

    def epsilon(z: float, how: AccountingMethod) -> float:
        return report(z, how).epsilon

    def bisect(lo: float, hi: float, how: AccountingMethod) -> float:
        while hi / lo > 1 + rel_tol:
            mid = math.sqrt(lo * hi)
            if epsilon(mid, how) <= target_epsilon:
                hi = mid
            else:
                lo = mid
        return hi

    rdp = AccountingMethod.RDP
    if epsilon(high, rdp) > target_epsilon:
        raise ConfigError(
            f"even noise_multiplier={high} spends more than epsilon={target_epsilon} at "
            f"delta={delta}: allow more epsilon, fewer rounds or a lower sampling rate"
        )
    z_rdp = low if epsilon(low, rdp) <= target_epsilon else bisect(low, high, rdp)
    if chosen is rdp or z_rdp == low:
        return z_rdp
    at_rdp = report(z_rdp, chosen)
    if at_rdp.method is rdp or at_rdp.epsilon > target_epsilon:
        return z_rdp  # discrete events are accounted with RDP anyway, or the methods disagree
    floor = max(low, z_rdp / 4)
    if epsilon(floor, chosen) <= target_epsilon:
        return floor
    return bisect(floor, z_rdp, chosen)
