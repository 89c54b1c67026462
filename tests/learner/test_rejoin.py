"""A party that missed a round applies its result and holds the others' adapter again.

Four parties hold the same tiny GPT-2 with FFA-LoRA (the test policy wants three
survivors); three train and run round 1, the fourth does not take part. Before round 2
it catches up (learner.federation.rejoin): its adapter must then be exactly the one the
three hold, and its chain the server's.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from fedveil.learner.federation import SecureRound, infer_layout
from fedveil.learner.federation.rejoin import catch_up_adapter
from fedveil.learner.lora import adapter_vector, base_model_hash
from tests.helpers.service_harness import client_for, make_keys, running_server, settings_for
from tests.learner.test_secure_round import tiny_lora_model, train_locally


def test_a_rejoining_party_ends_with_the_global_adapter(tmp_path: Path) -> None:
    models = [tiny_lora_model() for _ in range(4)]
    layout = infer_layout(models[0])
    base_hash = base_model_hash(models[0])

    async def federate() -> tuple[list[np.ndarray], list[int], bool]:
        keys, ids = make_keys(tmp_path, 4)
        settings = settings_for(
            tmp_path,
            keys,
            dimension=layout.size,
            model_hash=base_hash,
            rounds=2,
            stage_timeout_s=2.0,
        )
        async with running_server(settings) as server:
            clients = [client_for(keys, c, server.port, base_model_hash=base_hash) for c in ids]
            rounds = [SecureRound(m, c, layout) for m, c in zip(models, clients, strict=True)]
            try:
                for party, model in enumerate(models[:3]):
                    train_locally(model, party)
                await asyncio.gather(*(r.run(8) for r in rounds[:3]))
                applied = await catch_up_adapter(rounds[3])
                again = await catch_up_adapter(rounds[3])  # nothing more to fetch
                same_chain = (
                    clients[3].model_chain.model_hash == server.coordinator.chain.model_hash
                )
            finally:
                for client in clients:
                    await client.close()
        finals = [adapter_vector(m, layout) for m in models]
        return finals, [r.round_id for r in applied] + [len(again)], same_chain

    finals, applied, same_chain = asyncio.run(federate())
    assert applied == [1, 0]
    assert same_chain
    for final in finals[1:]:
        assert np.array_equal(final, finals[0]), "the rejoined party must hold the same adapter"
