"""Differential privacy for fedveil: clipping, rotation, integer noise, events, accounting.

Three modes (threat models in the README):
- sample-level DP-SGD with Opacus (learner/dp_sgd.py) emits GaussianEvent;
- client-level distributed DP: ClientDPPipeline with NoisePlacement.CLIENTS, each client
  adds its share of discrete Gaussian / Skellam noise before masking;
- central DP: NoisePlacement.SERVER, the server adds the noise after unmasking (trusts it).
Noise code emits events; PrivacyAccountant composes them; PrivacyLedger enforces budgets.
"""

from fedveil.secagg.dp.accounting import (
    AccountingMethod,
    EpsilonReport,
    PrivacyAccountant,
    calibrate_noise_multiplier,
)
from fedveil.secagg.dp.budget import PrivacyBudget, PrivacyLedger
from fedveil.secagg.dp.central import add_central_noise
from fedveil.secagg.dp.clipping import ClipResult, l2_clip
from fedveil.secagg.dp.config import ClientDPConfig, Mechanism, NoisePlacement
from fedveil.secagg.dp.events import (
    DEFAULT_ORDERS,
    DistributedDiscreteGaussianEvent,
    DpEvent,
    GaussianEvent,
    SkellamEvent,
)
from fedveil.secagg.dp.randomness import CryptoRandom
from fedveil.secagg.dp.report import FederationAccountant, RoundPrivacyReport
from fedveil.secagg.dp.rotation import RandomizedHadamard, fwht
from fedveil.secagg.dp.sampling import sample_discrete_gaussian, sample_poisson, sample_skellam
from fedveil.secagg.dp.stages import (
    ClientDPPipeline,
    ClientEncoding,
    DPAggregate,
    L2ClipStage,
    NoiseStage,
    QuantizeStage,
    RotationStage,
)

__all__ = [
    "DEFAULT_ORDERS",
    "AccountingMethod",
    "ClientDPConfig",
    "ClientDPPipeline",
    "ClientEncoding",
    "ClipResult",
    "CryptoRandom",
    "DPAggregate",
    "DistributedDiscreteGaussianEvent",
    "DpEvent",
    "EpsilonReport",
    "FederationAccountant",
    "GaussianEvent",
    "L2ClipStage",
    "Mechanism",
    "NoisePlacement",
    "NoiseStage",
    "PrivacyAccountant",
    "PrivacyBudget",
    "PrivacyLedger",
    "QuantizeStage",
    "RandomizedHadamard",
    "RotationStage",
    "RoundPrivacyReport",
    "SkellamEvent",
    "add_central_noise",
    "calibrate_noise_multiplier",
    "fwht",
    "l2_clip",
    "sample_discrete_gaussian",
    "sample_poisson",
    "sample_skellam",
]
