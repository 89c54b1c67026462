"""The committed protobuf/gRPC modules are exactly what `make proto` generates now."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT
GENERATED = ("aggregation_pb2.py", "aggregation_pb2_grpc.py", "aggregation_pb2.pyi")


def test_generated_modules_are_up_to_date(tmp_path: Path) -> None:
    (tmp_path / "fedveil" / "proto").mkdir(parents=True)
    shutil.copy(ROOT / "fedveil" / "proto" / "aggregation.proto", tmp_path / "fedveil" / "proto")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I.",
            "--python_out=.",
            "--grpc_python_out=.",
            "--pyi_out=.",
            "fedveil/proto/aggregation.proto",
        ],
        cwd=tmp_path,
        check=True,
    )
    stale = [
        name
        for name in GENERATED
        if (tmp_path / "fedveil" / "proto" / name).read_bytes()
        != (ROOT / "fedveil" / "proto" / name).read_bytes()
    ]
    assert not stale, f"{stale} are stale: run `make proto` and commit the result"


def test_package_name_is_fedveil_v1() -> None:
    from fedveil.proto import aggregation_pb2

    assert aggregation_pb2.DESCRIPTOR.package == "fedveil.v1"
    assert "Aggregation" in aggregation_pb2.DESCRIPTOR.services_by_name
