# fedveil: every target sets up its own virtual environment on a fresh machine.
# torch is pinned and installed first: on these machines the pin takes the CPU wheel on disk,
# an open range would pull gigabytes of CUDA packages.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fedveil-installed
TORCH_PIN := torch==2.13.0

.PHONY: venv test test-slow demo audit bench lint typecheck clean proto

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

test-slow: $(STAMP)
	$(PY) -m pytest -m slow -q

demo: $(STAMP)
	$(VENV)/bin/fedveil demo --json demo-report.json

# The leakage audit (quick profile, a few minutes on 2 cores); exit 1 on a breach of a
# claimed cell. Resumable: stored jobs under audit-report/work are reused.
audit: $(STAMP)
	$(VENV)/bin/fedveil audit --config benchmarks/audit.toml --out audit-report --profile quick --no-progress

bench: $(STAMP)
	mkdir -p benchmarks/results
	$(PY) benchmarks/secagg_bench.py --json benchmarks/results/secagg.json

# ruff; the layering contracts in pyproject.toml [tool.importlinter] (`lint-imports`);
# mypy over every package ([tool.mypy] files).
lint: $(STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports --no-logo
	$(PY) -m mypy

typecheck: $(STAMP)
	$(PY) -m mypy

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache .ruff_cache .import_linter_cache

# Regenerate the committed protobuf/gRPC modules (a test fails when they are stale).
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. --pyi_out=. fedveil/proto/aggregation.proto
