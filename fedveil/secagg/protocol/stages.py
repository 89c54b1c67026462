"""The SecAgg+ stages and the explicit transition table both state machines obey.

Why a table: every message is accepted in exactly one stage, and every move between
stages is listed here, so an illegal transition is a lookup miss that raises StageError
rather than a forgotten `if` somewhere in a handler.
"""

from __future__ import annotations

import enum

from fedveil.errors import StageError


class Stage(enum.Enum):
    ADVERTISE_KEYS = "advertise-keys"
    SHARE_KEYS = "share-keys"
    MASKED_INPUT = "masked-input"
    CONSISTENCY_CHECK = "consistency-check"
    UNMASK = "unmask"
    DONE = "done"
    FAILED = "failed"


ORDER = (
    Stage.ADVERTISE_KEYS,
    Stage.SHARE_KEYS,
    Stage.MASKED_INPUT,
    Stage.CONSISTENCY_CHECK,
    Stage.UNMASK,
    Stage.DONE,
)

TRANSITIONS: dict[Stage, frozenset[Stage]] = {
    Stage.ADVERTISE_KEYS: frozenset({Stage.SHARE_KEYS, Stage.FAILED}),
    Stage.SHARE_KEYS: frozenset({Stage.MASKED_INPUT, Stage.FAILED}),
    Stage.MASKED_INPUT: frozenset({Stage.CONSISTENCY_CHECK, Stage.FAILED}),
    Stage.CONSISTENCY_CHECK: frozenset({Stage.UNMASK, Stage.FAILED}),
    Stage.UNMASK: frozenset({Stage.DONE, Stage.FAILED}),
    Stage.DONE: frozenset(),
    Stage.FAILED: frozenset(),
}


def check_transition(current: Stage, target: Stage) -> None:
    """Raise StageError unless the table allows current -> target."""
    if target not in TRANSITIONS[current]:
        allowed = (
            ", ".join(s.value for s in sorted(TRANSITIONS[current], key=stage_order)) or "none"
        )
        raise StageError(
            f"illegal stage transition {current.value} -> {target.value}; "
            f"from {current.value} the protocol allows: {allowed}"
        )


def require_stage(current: Stage, expected: Stage, action: str) -> None:
    """Raise StageError when `action` is attempted outside its stage."""
    if current is not expected:
        raise StageError(
            f"{action} is only accepted in stage {expected.value}, but the session is in "
            f"stage {current.value}"
        )


def stage_order(stage: Stage) -> int:
    return ORDER.index(stage) if stage in ORDER else len(ORDER)
