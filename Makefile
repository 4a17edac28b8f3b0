# Everything sets itself up: uv (if missing), .venv from uv.lock, then the target.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
VENV := .venv
STAMP := $(VENV)/.synced

.PHONY: setup test test-all demo stop status lint bench clean

$(STAMP): pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen --python 3.11
	@touch $(STAMP)

setup: $(STAMP)

# The whole suite: unit, integration (Beam, Prefect flow) and the end-to-end deployment test.
test: setup
	$(VENV)/bin/python -m pytest -m "not gpu" $(PYTEST_ARGS)

# Fast unit tests only.
test-unit: setup
	$(VENV)/bin/python -m pytest -m "not integration and not e2e and not gpu" $(PYTEST_ARGS)

demo: setup
	infra/demo.sh

stop:
	infra/stack.sh stop

status:
	infra/stack.sh status

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: setup
	$(VENV)/bin/python bench/ingest_bench.py --dask-workers 2
	$(VENV)/bin/python bench/driver_bench.py
	$(VENV)/bin/python bench/input_bench.py

clean: stop
	rm -rf .trickflow
