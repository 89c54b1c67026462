"""What `fedveil status` shows: the open round, its stage and who it waits for, the
stage's deadline, and the last failure, built from the coordinator as a ServerStatus.

Why only this: an operator diagnosing a stuck or failed round needs to know where it is
and who is missing, never what anyone sent. So the message carries counts, enrolled ids,
times and the failure's message; no vector, share, key, signature or digest leaves
through it (tests/server/test_status.py checks the fields).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from fedveil.proto import aggregation_pb2 as pb
from fedveil.proto import convert
from fedveil.secagg.ckks.server_round import CkksServerRound
from fedveil.secagg.protocol.stages import Stage
from fedveil.server.active_round import AnyRound
from fedveil.server.coordinator import RoundCoordinator
from fedveil.server.plaintext import PlaintextRound


def wire_stage(server: AnyRound) -> pb.RoundStage:
    """The stage as clients and operators see it: plaintext and CKKS rounds *collect*
    uploads where SecAgg takes masked input, and a CKKS round's share-keys stage is the
    key holder's key distribution."""
    stage = convert.STAGE_TO_PB[server.stage]
    collects = isinstance(server, PlaintextRound | CkksServerRound)
    if collects and server.stage is Stage.MASKED_INPUT:
        return pb.ROUND_STAGE_COLLECT
    if isinstance(server, CkksServerRound) and server.stage is Stage.SHARE_KEYS:
        return pb.ROUND_STAGE_DISTRIBUTE_KEYS
    return stage


def server_status(
    coordinator: RoundCoordinator, connected: Callable[[], Iterable[str]]
) -> pb.ServerStatus:
    """The coordinator's state now (call it on the event loop: it reads the open round's
    sets); `connected` names the certificates with a call open."""
    settings = coordinator.settings
    enrolled = set(coordinator.roster)
    status = pb.ServerStatus(
        mode=convert.mode_to_wire(settings.mode),
        stage_timeout_s=settings.stage_timeout_s,
        enrolled_clients=len(enrolled),
        rounds_opened=coordinator.opened,
        results_published=coordinator.published,
        connected_clients=sorted(name for name in connected() if name in enrolled),
    )
    active = coordinator.current
    if active is not None:
        missing = active.server.expected_senders()
        status.round_open = True
        status.round_id = active.round_id
        status.stage = wire_stage(active.server)
        status.expected_clients = len(active.stage_expected)
        status.arrived_clients = len(active.stage_expected - missing)
        status.missing_clients.extend(sorted(missing))
        status.stage_opened_at = active.stage_opened_at
        status.stage_deadline = active.stage_opened_at + settings.stage_timeout_s
    failure = coordinator.last_failure
    if failure is not None:
        status.last_failed_round = failure.round_id
        if failure.stage is not None:
            status.last_failed_stage = convert.STAGE_TO_PB[failure.stage]
        status.last_failure = failure.reason
    privacy = [r.privacy for r in coordinator.rounds.values() if r.privacy is not None]
    if privacy:
        status.dp_epsilon_spent = privacy[-1].epsilon
    return status
