"""Rejoining: a party that missed rounds applies their results before it trains again.

Why: the next round's model hash chains every published result (secagg.protocol.
model_chain), and a FedAvg step is "round start + mean delta": a party that missed a
round holds neither the chain nor the adapter the others start from. Catching up fetches
each missed result (clients.catch_up: why that is safe is explained there) and applies
the means in order, exactly as SecureRound does after a round it took part in, so the
adapter is the current global one and the next delta is taken against it.
"""

from __future__ import annotations

import asyncio

from fedveil.clients.transport import AggregationClient
from fedveil.errors import ConfigError
from fedveil.learner.federation.secure_round import SecureRound, SecureRoundResult
from fedveil.proto import aggregation_pb2 as pb


async def catch_up_adapter(
    secure_round: SecureRound, info: pb.RoundInfo | None = None
) -> list[SecureRoundResult]:
    """Fetch the results of the rounds before the announced one that this party missed
    and apply them to its adapter in order; [] when it missed none.

    `info` is the announced round (default: the next round open for joining). Its spec
    is checked against this party's adapter first, so nothing is fetched for a round
    this adapter could not take part in.
    """
    client = secure_round.client
    if isinstance(client, AggregationClient):
        return await asyncio.to_thread(catch_up_adapter_sync, secure_round, info)
    announced = info if info is not None else await client.wait_for_round()
    secure_round.check_spec(announced.spec)
    if not client.needs_catch_up(announced):
        return []
    return [secure_round.apply_result(r) for r in await client.catch_up(announced)]


def catch_up_adapter_sync(
    secure_round: SecureRound, info: pb.RoundInfo | None = None
) -> list[SecureRoundResult]:
    """`catch_up_adapter` for a blocking AggregationClient."""
    client = secure_round.client
    if not isinstance(client, AggregationClient):
        raise ConfigError(
            "catch_up_adapter_sync needs the blocking AggregationClient; with an "
            "AsyncAggregationClient, `await catch_up_adapter(secure_round)` instead"
        )
    announced = info if info is not None else client.wait_for_round()
    secure_round.check_spec(announced.spec)
    if not client.needs_catch_up(announced):
        return []
    return [secure_round.apply_result(r) for r in client.catch_up(announced)]
