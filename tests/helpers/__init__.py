"""Helpers shared by tests in more than one folder: an in-process protocol harness
(harness), a gRPC service over mutual TLS in this process (service_harness), and the
built-in captioner at test size (captioner_fixtures)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The repository root: where pyproject.toml, benchmarks/ and the committed proto live."""
