"""The federation's differential-privacy policy: every round's DP terms, and the account.

Why a module of its own: what noise a round carries (calibrated once, from the settings
and the roster) and what the federation has spent (composed from every released DP round,
restored from the journal after a restart) are decided by the federation, not by the
round lifecycle; the coordinator only asks this policy for the terms of the next round
and hands it each released round to account.
"""

from __future__ import annotations

import logging

from fedveil.errors import ConfigError
from fedveil.proto import aggregation_pb2 as pb
from fedveil.proto.convert import dp_from_spec, mode_from_wire
from fedveil.secagg.dp.accounting import calibrate_noise_multiplier
from fedveil.secagg.dp.config import ClientDPConfig, Mechanism, NoisePlacement
from fedveil.secagg.dp.report import FederationAccountant, RoundPrivacyReport
from fedveil.secagg.modes import AggregationMode
from fedveil.secagg.protocol.dp import RoundDP
from fedveil.secagg.protocol.server import ServerRound
from fedveil.secagg.protocol.stages import Stage
from fedveil.server.journal import RoundJournal
from fedveil.server.settings import RoundSettings

log = logging.getLogger(__name__)


def dp_config(
    settings: RoundSettings, *, cohort: int, threshold: int, noise_multiplier: float
) -> ClientDPConfig:
    """The noise every party runs in a round of `cohort` clients at `threshold`."""
    s = settings
    return ClientDPConfig(
        clip_norm=s.dp_clip_norm,
        noise_multiplier=noise_multiplier,
        min_clients=s.dp_min_clients or threshold,
        max_cohort=cohort,
        dim=s.dimension,
        bits=s.bits,
        mechanism=Mechanism(s.dp_mechanism),
        placement=NoisePlacement.SERVER if s.dp == "central" else NoisePlacement.CLIENTS,
        rotate=s.dp_rotate,
    )


def round_dp(settings: RoundSettings, config: ClientDPConfig) -> RoundDP:
    """A round's DP terms: the noise `config` and the accounting terms of the settings."""
    return RoundDP(
        config,
        sampling_prob=settings.dp_sampling_prob,
        delta=settings.dp_delta,
        planned_rounds=settings.dp_planned_rounds,
        target_epsilon=settings.dp_target_epsilon or 0.0,
    )


def calibrated_round_dp(settings: RoundSettings, *, cohort: int, threshold: int) -> RoundDP | None:
    """Every round's DP terms, the noise multiplier calibrated here if not given."""
    s = settings
    if s.dp == "none":
        return None

    def config_for(z: float) -> ClientDPConfig:
        return dp_config(s, cohort=cohort, threshold=threshold, noise_multiplier=z)

    if s.dp_noise_multiplier is not None:
        z = s.dp_noise_multiplier
    else:
        assert s.dp_target_epsilon is not None
        rounds = s.dp_planned_rounds
        z = calibrate_noise_multiplier(
            lambda z: config_for(z).events(s.dp_sampling_prob, steps=rounds),
            s.dp_target_epsilon,
            s.dp_delta,
            method=s.dp_accountant,
        )
        log.info(
            "dp: noise multiplier %.4g spends epsilon <= %g at delta %g over %d rounds",
            z,
            s.dp_target_epsilon,
            s.dp_delta,
            rounds,
        )
    return round_dp(s, config_for(z))


class FederationDP:
    """The DP terms of every round of one federation and what its released rounds spent."""

    def __init__(self, settings: RoundSettings, *, cohort: int, threshold: int) -> None:
        self.round_dp = calibrated_round_dp(settings, cohort=cohort, threshold=threshold)
        self.accountant = FederationAccountant(settings.dp_accountant)

    def check_cohort(self, cohort: int) -> None:
        """A roster that grew past the cohort the noise was calibrated for is refused."""
        if self.round_dp is not None and cohort > self.round_dp.config.max_cohort:
            raise ConfigError(
                f"the roster grew to {cohort} clients, past the "
                f"{self.round_dp.config.max_cohort} the DP noise was calibrated for"
            )

    def restore(self, journal: RoundJournal) -> None:
        """Compose the DP rounds this federation released before a restart."""
        for spec_bytes in journal.round_specs("done"):
            spec = pb.RoundSpec.FromString(spec_bytes)
            if mode_from_wire(spec.mode) is not AggregationMode.SECAGG:
                continue
            dp = dp_from_spec(spec)
            if dp is not None:
                self.accountant.restore(dp.events())

    @staticmethod
    def released(server: object) -> bool:
        """Whether `server` is a DP round whose result is out (and must be accounted)."""
        return (
            isinstance(server, ServerRound)
            and server.stage is Stage.DONE
            and server.config.dp is not None
        )

    def account(self, server: ServerRound) -> RoundPrivacyReport:
        """The privacy report of a released DP round (composes it into the federation's)."""
        dp, result = server.config.dp, server.result
        assert dp is not None and result is not None and result.dp is not None
        return self.accountant.record(
            dp.config,
            dp.events(),
            delta=dp.delta,
            sampling_prob=dp.sampling_prob,
            noise_std=result.dp.noise_std,
            contributors=result.dp.contributors,
        )
