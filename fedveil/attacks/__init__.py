"""The attack suite: what an observer of a round (a plain update, a secure aggregate, a
noised one) or of a released model can learn. Every privacy claim in fedveil is checked
by one of these attacks.

By kind: `update/` (attacks on an observed update: inversion, labels, text),
`output/` (membership and extraction on a released model, and the output filters),
`targets/` (models and synthetic data to attack), `measure/` (the records benchmarks
and the audit read), `audit/` (`fedveil audit`). Beside them: `registry` (every attack
by name, update and output alike), `families` (one name per kind of leak, shared by the
registry, the benchmarks and the audit), `protections` (one object per protection) and
`views` (what a protection lets an observer see), and `survivor_partition` (an active
server's attack on the protocol).
"""

from fedveil.attacks.families import Family, Kind
from fedveil.attacks.protections import Protection, ProtectionSpec
from fedveil.attacks.registry import attack_class, available, create, output_attack, register
from fedveil.attacks.update.base import (
    Attack,
    AttackError,
    InversionTarget,
    LocalTraining,
    ObservedUpdate,
    ParameterLayout,
    Reconstruction,
    Target,
    TokenTarget,
    Truth,
    UpdateKind,
)
from fedveil.attacks.update.run import run_attack

__all__ = [
    "Attack",
    "AttackError",
    "Family",
    "InversionTarget",
    "Kind",
    "LocalTraining",
    "ObservedUpdate",
    "ParameterLayout",
    "Protection",
    "ProtectionSpec",
    "Reconstruction",
    "Target",
    "TokenTarget",
    "Truth",
    "UpdateKind",
    "attack_class",
    "available",
    "create",
    "output_attack",
    "register",
    "run_attack",
]
