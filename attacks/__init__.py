"""The attack suite: what an observer of an update (plain, secure aggregate, noised) can
reconstruct. Every privacy claim in fedveil is checked by one of these attacks.

Public API: the interface (`base`), the registry (`registry.create(name, ...)`), the
protection views (`views`), the metrics (`metrics`), and the attacks themselves, each
in its own module: `dlg`, `inverting_gradients`, `label_leakage`, `text_recovery`.
Targets (models and synthetic data to attack) live in `attacks.targets`.
"""

from attacks.base import (
    Attack,
    AttackError,
    InversionTarget,
    LocalTraining,
    ObservedUpdate,
    ParameterLayout,
    Protection,
    Reconstruction,
    Target,
    TokenTarget,
    Truth,
    UpdateKind,
    run_attack,
)
from attacks.registry import attack_class, available, create, register

__all__ = [
    "Attack",
    "AttackError",
    "InversionTarget",
    "LocalTraining",
    "ObservedUpdate",
    "ParameterLayout",
    "Protection",
    "Reconstruction",
    "Target",
    "TokenTarget",
    "Truth",
    "UpdateKind",
    "attack_class",
    "available",
    "create",
    "register",
    "run_attack",
]
