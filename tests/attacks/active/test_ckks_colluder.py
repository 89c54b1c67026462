"""A server colluding with one enrolled client against the real CKKS round, both ways:
with the colluder's key it reads one upload; without it (or from an honest client) the
server gets the mean only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedveil.attacks.active.ckks_colluder import (
    colluder_view,
    decrypt_one,
    run_ckks_colluder,
    run_ckks_round,
)
from fedveil.errors import CohortTooSmallError, ConfigError
from fedveil.secagg.ckks.codec import decrypt_mean

D = 48


def _updates(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.5, D) for _ in range(n)]


@pytest.mark.parametrize("colluder", [0, 2], ids=["key-holder", "any-client"])
def test_a_colluding_client_lets_the_server_decrypt_one_upload(colluder: int) -> None:
    updates = _updates(3)
    result = run_ckks_colluder(updates, [3, 5, 7], victim=1, colluder=colluder)
    assert result.colluder_holds_secret_key and not result.server_holds_secret_key
    assert result.recovered_exactly and result.cosine > 0.999999
    assert round(result.recovered_weight) == 5
    # the honest-server view (the mean) is not the victim's update
    assert result.sum_max_abs_error > 0.1 and result.sum_cosine < 0.9


def test_colluder_view_is_the_victims_update() -> None:
    updates = _updates(2, seed=1)
    seen = colluder_view(updates, victim=0)
    assert np.max(np.abs(seen - updates[0])) <= 1e-5


def test_the_server_alone_cannot_decrypt_an_upload() -> None:
    capture = run_ckks_round(_updates(3, seed=2), colluder=1)
    assert not capture.public_keyring.is_private
    with pytest.raises(ConfigError, match="secret context"):
        decrypt_mean(
            capture.public_keyring,
            capture.uploads["client-0"],
            D,
            max_weight=capture.config.max_weight,
            weight_scale=capture.config.weight_scale,
        )
    # with the colluder's key the same bytes open
    recovered, _ = decrypt_one(capture, "client-0")
    assert recovered.shape == (D,)


def test_an_honest_client_refuses_one_upload_passed_off_as_the_result() -> None:
    capture = run_ckks_round(_updates(3, seed=3), colluder=1)
    single = dataclasses.replace(
        capture.result,
        survivors=("client-0",),
        ciphertexts=tuple(capture.uploads["client-0"]),
    )
    with pytest.raises(CohortTooSmallError, match="single client"):
        capture.sessions["client-2"].decrypt(single)
