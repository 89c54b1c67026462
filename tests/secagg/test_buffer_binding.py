"""A buffered round's K (RoundConfig.min_survivors) is bound into the session.

Attacker first, driving the real ClientSession and ServerRound as a malicious server
would (runners.simulation delivers the messages in process):
- a server that shows one client another K than the others gets a key advertisement
  whose signature does not verify under its round: the session ids differ;
- a server that announces K but closes with fewer survivors gets no signature, even from
  clients whose own floor is lower than K (and without a K the same round is released,
  so the refusal is caused by the binding, not by anything else);
- a client whose minimum cohort exceeds K refuses the round before any key leaves, and
  one whose floor is K takes part.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedveil.errors import CohortTooSmallError, ConfigError, InvalidSignatureError
from fedveil.runners.simulation import Federation, make_config, run_round
from fedveil.secagg.protocol.client import ClientSession
from fedveil.secagg.protocol.config import ClientPolicy
from fedveil.secagg.protocol.server import ServerRound
from fedveil.secagg.protocol.stages import Stage

D = 16
LOW_FLOOR = ClientPolicy(min_cohort=2, min_threshold=2)


def _inputs(federation: Federation) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {cid: rng.uniform(-0.5, 0.5, D) for cid in federation.ids}


def test_k_is_in_the_session_id_only_when_set() -> None:
    federation = Federation.enrol(5)
    plain = make_config(federation, D)
    three = dataclasses.replace(plain, min_survivors=3)
    four = dataclasses.replace(plain, min_survivors=4)
    assert len({plain.session_id, three.session_id, four.session_id}) == 3
    # an unbuffered round keeps the session id it always had
    assert dataclasses.replace(three, min_survivors=None).session_id == plain.session_id


def test_a_client_shown_another_k_cannot_take_part() -> None:
    federation = Federation.enrol(5)
    config = dataclasses.replace(make_config(federation, D), min_survivors=4)
    told_less = dataclasses.replace(config, min_survivors=3)
    cid = federation.ids[0]
    session = ClientSession(
        told_less, cid, federation.identities[cid], federation.roster, LOW_FLOOR
    )
    server = ServerRound(config, federation.roster)
    with pytest.raises(InvalidSignatureError):
        server.receive(session.advertise())
    honest = ClientSession(config, cid, federation.identities[cid], federation.roster, LOW_FLOOR)
    server.receive(honest.advertise())  # the same client under the announced K: accepted


def test_a_server_closing_below_k_gets_no_signature() -> None:
    """Five clients, K = 4; the server drops two before the upload (3 survivors, which
    meets the threshold 3 and the consistency quorum 3): every client's own floor is 2."""
    federation = Federation.enrol(5)
    plain = make_config(federation, D)
    dropped = {cid: Stage.MASKED_INPUT for cid in federation.ids[3:]}
    buffered = dataclasses.replace(plain, min_survivors=4)
    report = run_round(
        buffered, federation, _inputs(federation), dropouts=dropped, policy=LOW_FLOOR
    )
    assert report.result is None and report.failure is not None
    refused = {cid: exc for cid, exc in report.refusals.items() if cid not in dropped}
    assert set(refused) == set(federation.ids[:3])
    assert all(isinstance(exc, CohortTooSmallError) for exc in refused.values())
    assert all("below this client's floor of 4" in str(exc) for exc in refused.values())
    # the other direction: without a K the same three survivors' sum is released
    released = run_round(plain, federation, _inputs(federation), dropouts=dropped, policy=LOW_FLOOR)
    assert released.result is not None and len(released.result.survivors) == 3


def test_a_client_refuses_a_k_below_its_minimum_cohort_before_any_key_leaves() -> None:
    federation = Federation.enrol(5)
    config = dataclasses.replace(make_config(federation, D), min_survivors=3)
    cid = federation.ids[0]
    with pytest.raises(
        CohortTooSmallError, match="buffers K=3 clients, below this client's minimum cohort 4"
    ):
        ClientSession(
            config, cid, federation.identities[cid], federation.roster, ClientPolicy(min_cohort=4)
        )
    report = run_round(config, federation, _inputs(federation), policy=ClientPolicy(min_cohort=3))
    assert report.result is not None and len(report.result.survivors) == 5


def test_an_impossible_k_is_refused() -> None:
    federation = Federation.enrol(5)
    config = make_config(federation, D)  # t = 3
    for k in (2, 6, True):
        with pytest.raises(ConfigError, match="min_survivors"):
            dataclasses.replace(config, min_survivors=k)
