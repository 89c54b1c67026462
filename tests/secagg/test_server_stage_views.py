"""The server's per-stage views (secagg.protocol.server._freeze_views, stage_complete).

Why: the server answers each client message in O(1) by computing what a closed stage has
fixed once, when the next stage opens (the survivor list and its signed encoding, the
signers, the one unmask request), and by counting answers instead of rebuilding the set of
clients still expected. These tests hold the fast paths to the definitions they replace,
along whole rounds with dropouts at every stage.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedveil.runners.simulation import CLIENT_STAGES, Federation, make_config, run_round
from fedveil.secagg.protocol.consistency import survivor_set_message
from fedveil.secagg.protocol.messages import UnmaskRequest
from fedveil.secagg.protocol.server import ServerRound
from fedveil.secagg.protocol.stages import Stage


@pytest.mark.parametrize("drop_stage", CLIENT_STAGES)
def test_stage_complete_is_no_expected_sender_along_a_round(
    drop_stage: Stage, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[Stage] = []
    receive, advance = ServerRound.receive, ServerRound.advance

    def check(server: ServerRound) -> None:
        assert server.stage_complete() == (not server.expected_senders())
        if server.stage is Stage.CONSISTENCY_CHECK:
            assert server._survivor_message == survivor_set_message(  # noqa: SLF001
                server.config.session_id, server.survivors
            )
        if server.stage is Stage.UNMASK:
            for cid in server.expected_senders():
                request = server.request_for(cid)
                assert isinstance(request, UnmaskRequest)
                assert request.survivors == tuple(sorted(server.survivors))
        checked.append(server.stage)

    def checked_receive(self: ServerRound, message: Any) -> None:
        receive(self, message)
        check(self)

    def checked_advance(self: ServerRound) -> Stage:
        stage = advance(self)
        check(self)
        return stage

    monkeypatch.setattr(ServerRound, "receive", checked_receive)
    monkeypatch.setattr(ServerRound, "advance", checked_advance)
    federation = Federation.enrol(9)
    config = make_config(federation, 64)
    rng = np.random.default_rng(3)
    inputs = {cid: rng.uniform(-0.5, 0.5, 64) for cid in federation.ids}
    dropouts = {federation.ids[0]: drop_stage, federation.ids[4]: drop_stage}
    report = run_round(config, federation, inputs, dropouts=dropouts)
    if drop_stage is not Stage.CONSISTENCY_CHECK:  # a survivor that does not sign: fails closed
        assert report.result is not None
    assert Stage.UNMASK in checked or drop_stage is Stage.CONSISTENCY_CHECK
    assert len(checked) > 9 * 4
