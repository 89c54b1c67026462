"""Shared test set-up. The tree under tests/ mirrors fedveil/ (tests/secagg/ tests
fedveil/secagg/, tests/server/ the gRPC service, tests/attacks/update/ the update attacks,
...). Helpers used by more than one folder are importable modules in tests/helpers/
(`from tests.helpers.service_harness import ...`), never imported by bare name; this file
stays free of torch so the suites that do not train start fast."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (pyproject.toml, benchmarks/, fedveil/)."""
    return REPO_ROOT
