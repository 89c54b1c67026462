"""Opacus' PRV accountant as secagg's PRV backend (secagg.dp.accounting.PrvBackend).

Why here: the PRV accountant (Gopi, Lee, Wutschitz 2021) we account DP-SGD with is Opacus',
and opacus imports torch; secagg, the pure core, must import neither (issue 16), so the
backend lives with DP-SGD in the learner and is declared as an entry point
(secagg.dp.accounting.PRV_BACKEND_GROUP in pyproject.toml). dp_accounting (no torch) has no
PRV accountant, and its PLD accountant agrees only to about a percent, not to the digits
that ledgers written before already recorded. opacus itself is imported only when an
epsilon is asked, so a server without fedveil[train] accounts with rdp or pld.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedveil.errors import ConfigError


def opacus_prv_epsilon(
    history: Sequence[tuple[float, float, int]], delta: float, eps_error: float
) -> float:
    """Opacus' PRVAccountant's upper estimate of epsilon for (noise_multiplier,
    sampling_prob, steps) steps of the Poisson-subsampled Gaussian."""
    try:
        from opacus.accountants import PRVAccountant
    except ImportError as exc:
        raise ConfigError(
            "the prv accountant uses Opacus, which is not installed: install fedveil[train], "
            "or account with pld or rdp"
        ) from exc
    accountant = PRVAccountant()
    accountant.history = [(float(z), float(q), int(n)) for z, q, n in history]
    return float(accountant.get_epsilon(delta, eps_error=eps_error))
