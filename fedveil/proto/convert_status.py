"""A ServerStatus as plain data (`fedveil status --json`) with the enum names spelled as
the rest of the project spells them (`masked_input`, `secagg`), not as wire constants."""

from __future__ import annotations

from typing import Any

from fedveil.proto import aggregation_pb2 as pb


def _enum_name(value: int, enum: Any, prefix: str) -> str:
    try:
        return str(enum.Name(value)).removeprefix(prefix).lower()
    except ValueError:
        return f"unknown({value})"


def stage_name(stage: int) -> str:
    """ROUND_STAGE_MASKED_INPUT -> "masked_input"; 0 -> "unspecified"."""
    return _enum_name(stage, pb.RoundStage, "ROUND_STAGE_")


def mode_name(mode: int) -> str:
    """AGGREGATION_MODE_SECAGG -> "secagg"."""
    return _enum_name(mode, pb.AggregationMode, "AGGREGATION_MODE_")


def status_to_dict(status: pb.ServerStatus) -> dict[str, Any]:
    """Every field, always present (a round that is not open has round null)."""
    current: dict[str, Any] | None = None
    if status.round_open:
        current = {
            "round_id": int(status.round_id),
            "stage": stage_name(status.stage),
            "expected_clients": int(status.expected_clients),
            "arrived_clients": int(status.arrived_clients),
            "missing_clients": list(status.missing_clients),
            "stage_opened_at": float(status.stage_opened_at),
            "stage_deadline": float(status.stage_deadline),
        }
    failure: dict[str, Any] | None = None
    if status.last_failed_round:
        failure = {
            "round_id": int(status.last_failed_round),
            "stage": stage_name(status.last_failed_stage) if status.last_failed_stage else None,
            "reason": status.last_failure,
        }
    return {
        "mode": mode_name(status.mode),
        "round": current,
        "connected_clients": list(status.connected_clients),
        "enrolled_clients": int(status.enrolled_clients),
        "stage_timeout_s": float(status.stage_timeout_s),
        "rounds_opened": int(status.rounds_opened),
        "results_published": int(status.results_published),
        "last_failure": failure,
        "dp_epsilon_spent": float(status.dp_epsilon_spent),
    }
