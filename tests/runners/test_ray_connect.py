"""Starting a local Ray on a loaded machine: one slow start is retried, not fatal.

Ray's own calls are replaced here (no Ray is started): what is tested is connect's
decision, which a real slow start cannot reproduce on demand.
"""

from __future__ import annotations

from typing import Any

import pytest

from fedveil.errors import ConfigError

ray = pytest.importorskip("ray")

from fedveil.runners import ray_backend  # noqa: E402


def _fake_ray(
    monkeypatch: pytest.MonkeyPatch,
    failures: int,
    error: Exception | None = None,
) -> list[str]:
    error = error or RuntimeError("Timed out waiting for file .../gcs_server_port")
    calls: list[str] = []

    def init(**_: Any) -> None:
        calls.append("init")
        if calls.count("init") <= failures:
            raise error

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    return calls


def test_a_local_start_that_times_out_once_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_ray(monkeypatch, failures=1)
    assert ray_backend.connect(num_cpus=2) is True
    assert calls == ["init", "shutdown", "init"]


def test_a_node_start_up_timeout_is_retried_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """What Ray raised once in a fresh-clone CI run: a bare Exception, not a RuntimeError."""
    timeout = Exception("The current node timed out during startup.")
    calls = _fake_ray(monkeypatch, failures=1, error=timeout)
    assert ray_backend.connect(num_cpus=2) is True
    assert calls == ["init", "shutdown", "init"]


def test_a_local_ray_that_never_starts_is_one_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _fake_ray(monkeypatch, failures=99)
    with pytest.raises(ConfigError, match="could not start a local Ray"):
        ray_backend.connect(num_cpus=2)
    assert calls.count("init") == ray_backend.LOCAL_START_ATTEMPTS
