"""The parts a user installs: the server and the plain client SDK run without torch.

pyproject.toml's base dependencies are what an operator (`fedveil server`, `fedveil keys`)
and a party that uploads an update it computed elsewhere (`fedveil client`, the SDK in
clients.transport) install; `[train]` adds torch, transformers, peft and opacus for parties
that fine-tune here, `[audit]` the attack suite, `[all]` both, `[dev]` all and the tools.

The round test runs in a fresh interpreter whose import system refuses the deep-learning
stack (a finder first on sys.meta_path), the same as an environment where only the base
dependencies are installed: the CLI issues the keys, runs a real `fedveil server` and
three SDK clients complete a SecAgg+ round over mutual TLS. It then checks that nothing
on that path even tried to import torch, and that every distribution the process loaded
is a base dependency or something one of them requires (so the base list is complete).

tenseal is *not* blocked: it stays a base dependency. CKKS is one of the server's modes,
and the server and SDK import it at module level (server/coordinator.py ->
proto/convert_ckks.py -> secagg/ckks; clients/transport.py -> clients/ckks_driver.py);
it is a ~6 MB wheel that needs no torch.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT
DEEP_LEARNING = ("torch", "torchvision", "transformers", "peft", "opacus", "pytorch_msssim")
# Installed here by [dev] but not by the base install, and imported when present: grpc
# imports grpc_tools; numpy.f2py imports charset_normalizer (which [sim]'s Ray pulls in
# through requests).
NOT_IN_BASE = ("grpc_tools", "charset_normalizer")
TRAIN_DISTRIBUTIONS = {"torch", "transformers", "peft", "opacus"}

# Runs in the subprocess: argv = folder, port, blocked, absent. Prints one JSON line last.
_ROUND_SCRIPT = r"""
import sys

BLOCKED = set(sys.argv[3].split(","))
ABSENT = set(sys.argv[4].split(","))
attempts = []


class RefuseDeepLearning:
    # What `pip install fedveil` (no extras) leaves out: importing it fails as if absent.
    # BLOCKED: the deep-learning stack, every attempt recorded; ABSENT: other packages of
    # this environment that a base install lacks and libraries probe for (grpc tries
    # grpc_tools), refused quietly.
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in BLOCKED:
            attempts.append(name)
        if top in BLOCKED or top in ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None


sys.meta_path.insert(0, RefuseDeepLearning())
try:
    import torch  # noqa: F401
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("the import blocker did not block torch")
attempts.clear()

import asyncio
import hashlib
import importlib.metadata
import json
import threading
from pathlib import Path

import numpy as np

from fedveil.cli import main

root, port = Path(sys.argv[1]), int(sys.argv[2])
ca, server_dir, state = root / "ca", root / "server", root / "state"
ids = ["org-a", "org-b", "org-c"]
model_hash = hashlib.sha256(b"fedveil-installable-parts").digest()
d = 500

assert main(["keys", "init", "--ca-dir", str(ca), "--server-dir", str(server_dir),
             "--hosts", "localhost,127.0.0.1"]) == 0
for cid in ids:
    assert main(["keys", "request", "--client-id", cid, "--dir", str(root / cid)]) == 0
    assert main(["keys", "enrol", "--ca-dir", str(ca), "--server-dir", str(server_dir),
                 str(root / cid / "request.json")]) == 0

from fedveil.clients.credentials import ClientCredentials
from fedveil.clients.roster_file import load_roster_identities
from fedveil.clients.transport import AsyncAggregationClient, TransportSecurity
from fedveil.secagg.protocol.config import ClientPolicy

rng = np.random.default_rng(16)
updates = {c: rng.normal(0.0, 0.3, d).astype(np.float32) for c in ids}
weights = {c: int(rng.integers(1, 100)) for c in ids}
outcome = {}
sdk_ids, cli_id = ids[:2], ids[2]


async def federation():
    roster = load_roster_identities(server_dir / "roster.json")
    clients = []
    for cid in sdk_ids:
        creds = ClientCredentials.load(root / cid)
        clients.append(AsyncAggregationClient(
            f"127.0.0.1:{port}", cid, creds.identity, roster,
            TransportSecurity.from_credentials(creds),
            policy=ClientPolicy(min_cohort=3), base_model_hash=model_hash,
        ))
    try:
        return await asyncio.wait_for(asyncio.gather(*(
            c.run_round(updates[c.client_id], weights[c.client_id], join_timeout_s=60)
            for c in clients
        )), timeout=120)
    finally:
        for c in clients:
            await c.close()


def run_sdk_clients():
    try:
        outcome["results"] = asyncio.run(federation())
    except BaseException as exc:  # reported below, after the server returns
        outcome["error"] = repr(exc)


def run_cli_client():
    # `fedveil client` with an adapter saved as .safetensors (read with numpy, no torch).
    from safetensors.numpy import save_file

    update = root / f"{cli_id}.safetensors"
    save_file({"w": updates[cli_id]}, str(update))
    outcome["cli_status"] = main([
        "client", "--server", f"127.0.0.1:{port}", "--credentials", str(root / cli_id),
        "--roster", str(server_dir / "roster.json"), "--update", str(update),
        "--weight", str(weights[cli_id]), "--out", str(root / "cli-result.npy"),
        "--model-hash", model_hash.hex(),
    ])


# The clients poll until the server answers; the server runs in the main thread (it
# installs signal handlers) and returns once its one round is done.
threads = [threading.Thread(target=f, daemon=True) for f in (run_sdk_clients, run_cli_client)]
for thread in threads:
    thread.start()
status = main(["server", "--keys-dir", str(server_dir), "--state-dir", str(state),
               "--host", "127.0.0.1", "--port", str(port), "--dimension", str(d),
               "--rounds", "1", "--min-cohort", "3", "--stage-timeout-s", "30",
               "--model-hash", model_hash.hex()])
for thread in threads:
    thread.join(timeout=60)

exact = sum(weights[c] * np.clip(updates[c], -1.0, 1.0).astype(np.float64) for c in ids)
exact /= sum(weights.values())
errors = []
for result in outcome.get("results", []):
    err = float(np.max(np.abs(result.weighted_mean - exact)))
    if sorted(result.survivors) != ids or err > result.error_bound:
        errors.append(f"survivors {result.survivors}, error {err:.3e} > {result.error_bound:.3e}")
if outcome.get("cli_status") == 0:
    bound = max(r.error_bound for r in outcome["results"]) if outcome.get("results") else 0.0
    err = float(np.max(np.abs(np.load(root / "cli-result.npy") - exact)))
    if err > bound:
        errors.append(f"fedveil client: error {err:.3e} > {bound:.3e}")

top = {name.partition(".")[0] for name in sys.modules}
dists = importlib.metadata.packages_distributions()
loaded = sorted({dist for name in top for dist in dists.get(name, ())})
print(json.dumps({
    "server_status": status,
    "client_error": outcome.get("error"),
    "cli_status": outcome.get("cli_status"),
    "results": len(outcome.get("results", [])),
    "errors": errors,
    "attempts": sorted(set(attempts)),
    "in_sys_modules": sorted(top & BLOCKED),
    "loaded_distributions": loaded,
}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _source_copy(tmp_path: Path) -> Path:
    """The checkout without its environment and outputs: setuptools builds in the source
    folder (build/, *.egg-info), which should not be the working tree."""
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv",
            "build",
            "*.egg-info",
            "__pycache__",
            ".*_cache",
            ".hypothesis",
            "audit-report",
            "fedveil-demo-adapter",
            "benchmarks",
            "tests",
        ),
    )
    return source


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    """The normalised distribution name at the start of a requirement string."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def _base_closure(base: list[str]) -> set[str]:
    """The base dependencies and, recursively, what they require (no extras)."""
    import importlib.metadata as md

    seen: set[str] = set()
    todo = [_name(r) for r in base]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        todo += [_name(r) for r in requires if "extra ==" not in r.replace('"', " ")]
    return seen


def test_extras_match_the_user_groups() -> None:
    project = _pyproject()["project"]
    base = {_name(r) for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    assert not base & TRAIN_DISTRIBUTIONS, "the base install must not pull the DL stack"
    train = {_name(r) for r in extras["train"]}
    assert train >= TRAIN_DISTRIBUTIONS
    assert "fedveil[train]" in extras["audit"]
    assert {"fedveil[train]", "fedveil[audit]"} <= set(extras["all"])
    assert "fedveil[all]" in extras["dev"]
    # safetensors is read by `fedveil client --update x.safetensors` (numpy, no torch).
    assert "safetensors" in base


def test_server_and_sdk_round_without_torch(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _ROUND_SCRIPT,
            str(tmp_path),
            str(_free_port()),
            ",".join(DEEP_LEARNING),
            ",".join(NOT_IN_BASE),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    tail = f"\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    assert proc.returncode == 0, tail
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["server_status"] == 0, tail
    assert report["client_error"] is None, report["client_error"] + tail
    assert report["cli_status"] == 0, tail
    assert report["results"] == 2 and report["errors"] == [], tail
    assert report["attempts"] == [], f"the torch-free path tried to import {report['attempts']}"
    assert report["in_sys_modules"] == []
    # Every distribution the server and SDK loaded comes with `pip install fedveil`.
    declared = _base_closure(_pyproject()["project"]["dependencies"])
    # (setuptools: its .pth hook, _distutils_hack, loads in every venv that has it.)
    loaded = {_name(d) for d in report["loaded_distributions"]} - {"fedveil", "setuptools", "pip"}
    assert loaded <= declared, f"loaded but not in the base install: {sorted(loaded - declared)}"


@pytest.mark.slow
def test_wheel_metadata_lists_the_extras(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path),
            str(_source_copy(tmp_path)),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("fedveil-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (meta,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        lines = archive.read(meta).decode().splitlines()
    extras = {line.split(":", 1)[1].strip() for line in lines if line.startswith("Provides-Extra:")}
    assert extras >= {"train", "audit", "all", "dev"}
    requires = [
        line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")
    ]
    for requirement in requires:
        if _name(requirement) in TRAIN_DISTRIBUTIONS:
            assert "extra ==" in requirement, f"unconditional {requirement}"


@pytest.mark.slow
def test_base_install_in_a_fresh_venv_runs_a_round(tmp_path: Path) -> None:
    """The issue's check as a user would do it: `pip install fedveil` (no extras) into an
    empty virtual environment, then the same round. Needs the package index (or the
    machine's wheel cache); about half a minute."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(_source_copy(tmp_path))],
        check=True,
        timeout=600,
    )
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    installed = {_name(line) for line in listed.splitlines() if line}
    assert not installed & (TRAIN_DISTRIBUTIONS | {"grpcio-tools"}), sorted(installed)
    work = tmp_path / "work"  # not the checkout: the installed copy is what runs
    work.mkdir()
    proc = subprocess.run(
        [str(python), "-c", _ROUND_SCRIPT, str(work), str(_free_port()), "torch", "none"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=240,
    )
    tail = f"\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    assert proc.returncode == 0, tail
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["server_status"] == 0 and report["cli_status"] == 0, tail
    assert report["results"] == 2 and report["errors"] == [], tail
