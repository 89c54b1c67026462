"""The audit's `epsilon` column: white-box canaries against a DP row's own mechanism.

Why beside the text-canary bound: 48 canaries planted in one training run certify at most
about 1.7, so that check can never refute the 6-18 epsilons the DP rows claim. Here the
auditor controls the mechanism's input (a Dirac canary gradient in a real DP-SGD step, a
canary client in the real client-DP round) and repeats it over thousands of independent
trials, so a broken mechanism (noise switched off, the claim kept) is refuted
(attacks.output.gradient_canaries). The claim is for exactly what is tested: one step (one
round) at sensitivity C, not the federation's composed epsilon.
"""

from __future__ import annotations

import time

from fedveil.attacks.measure.records import LeakRecord
from fedveil.attacks.output.gradient_canaries import (
    QUICK_CLIENT_DP_TRIALS,
    QUICK_DP_SGD_TRIALS,
    CanaryAudit,
    client_dp_canary_audit,
    dp_sgd_canary_audit,
)
from fedveil.attacks.protections import Aggregators, DPSettings, Protection
from fedveil.errors import ConfigError
from fedveil.secagg.modes import DPKind

FULL_PROFILE_FACTOR = 4
"""The full profile runs this many times the quick profile's trials (a higher certifiable
bound, so smaller claims too can be refuted)."""

METRIC = "epsilon_lower_bound"
TARGET = "dirac-canaries"


def canary_audit(
    protection: Protection, dp: DPSettings, aggregators: Aggregators, quick: bool
) -> CanaryAudit:
    """Run the canary audit of `protection`'s mechanism at the audit's DP settings."""
    factor = 1 if quick else FULL_PROFILE_FACTOR
    kind = protection.spec.dp
    if kind is DPKind.SAMPLE:
        return dp_sgd_canary_audit(dp, trials=QUICK_DP_SGD_TRIALS * factor)
    if kind is DPKind.CLIENT:
        return client_dp_canary_audit(dp, aggregators, trials=QUICK_CLIENT_DP_TRIALS * factor)
    raise ConfigError(f"protection {protection.value!r} makes no DP claim to audit")


def canary_record(
    protection: Protection, dp: DPSettings, aggregators: Aggregators, quick: bool
) -> LeakRecord:
    """The canary audit as the one record its cell is judged on: value = the lower bound,
    params = the claim, what a perfect attack could certify, the confusion counts."""
    start = time.perf_counter()
    audit = canary_audit(protection, dp, aggregators, quick)
    return LeakRecord(
        TARGET,
        protection.value,
        1,
        METRIC,
        float(audit.lower_bound),
        0.0,
        time.perf_counter() - start,
        {
            "mechanism": audit.mechanism,
            "claim": float(audit.claim),
            "certifiable": float(audit.certifiable),
            "delta": float(audit.delta),
            "alpha": float(audit.alpha),
            "trials": int(audit.trials),
            "threshold": float(audit.threshold),
            "tpr": float(audit.tpr),
            "fpr": float(audit.fpr),
            "verdict": audit.verdict.value,
        },
    )
