"""The committed protobuf/gRPC modules are exactly what `make proto` generates now."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ("aggregation_pb2.py", "aggregation_pb2_grpc.py", "aggregation_pb2.pyi")


def test_generated_modules_are_up_to_date(tmp_path: Path) -> None:
    (tmp_path / "proto").mkdir()
    shutil.copy(ROOT / "proto" / "aggregation.proto", tmp_path / "proto")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I.",
            "--python_out=.",
            "--grpc_python_out=.",
            "--pyi_out=.",
            "proto/aggregation.proto",
        ],
        cwd=tmp_path,
        check=True,
    )
    stale = [
        name
        for name in GENERATED
        if (tmp_path / "proto" / name).read_bytes() != (ROOT / "proto" / name).read_bytes()
    ]
    assert not stale, f"{stale} are stale: run `make proto` and commit the result"


def test_package_name_is_fedveil_v1() -> None:
    from proto import aggregation_pb2

    assert aggregation_pb2.DESCRIPTOR.package == "fedveil.v1"
    assert "Aggregation" in aggregation_pb2.DESCRIPTOR.services_by_name
