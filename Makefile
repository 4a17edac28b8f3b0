# Everything sets itself up: uv (if missing), .venv from uv.lock, then the target.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
VENV := .venv
STAMP := $(VENV)/.synced

GPU_VENV := .venv-gpu
GPU_REQS := bench/gpu_env/requirements.txt
GPU_STAMP := $(GPU_VENV)/.synced
# Carried to the GPU machine as py3.12 wheels: keras and what it and components/train/config.py need
# that the machine's image lacks (it has numpy, absl-py, rich, h5py, ml-dtypes, packaging, jax).
GPU_WHEELS := keras namex optree pydantic pydantic-core annotated-types typing-inspection typing-extensions
PIP := $(shell $(PYTHON) -m pip --version >/dev/null 2>&1 && echo "$(PYTHON) -m pip" || echo "$(UV) tool run pip")
PLATFORMS := manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64

.PHONY: setup test test-cluster test-all demo run stop status lint bench clean tensorboard gpu-check-cpu gpu-wheels gpu-data

$(STAMP): pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen --python 3.11
	@touch $(STAMP)

setup: $(STAMP)

# The whole suite: unit, integration (Beam, Prefect flow) and the end-to-end deployment test.
# Two or more pytest processes, a file each at a time (the flow tests share one Prefect server
# per process): much of the suite waits on servers and subprocesses, so a second process fills
# the idle core (23 -> ~15 min on 2 cores). TESTS_IN_PARALLEL=0 runs it in one process.
TESTS_IN_PARALLEL ?= auto
PARALLEL := $(if $(filter 0,$(TESTS_IN_PARALLEL)),,-n $(TESTS_IN_PARALLEL) --maxprocesses 4 --dist loadfile)
test: setup
	$(VENV)/bin/python -m pytest -m "not gpu and not cluster" $(PARALLEL) $(PYTEST_ARGS)

# The cluster shape on this machine: Prefect and MLflow on PostgreSQL, CPU and GPU pools with
# their own workers, trainings queued on the limit, the gate race on the PostgreSQL registry, and
# every link of a run's summary opened in headless Chromium. Needs Debian's `chromium` and
# PostgreSQL's server programs (`postgresql`; initdb and pg_ctl on PATH or in
# /usr/lib/postgresql/*/bin): .ci/run installs both when they are missing.
test-cluster: setup
	$(VENV)/bin/python -m pytest -m cluster $(PYTEST_ARGS)

# Fast unit tests only.
test-unit: setup
	$(VENV)/bin/python -m pytest -m "not integration and not e2e and not gpu and not cluster" $(PYTEST_ARGS)

demo: setup
	infra/demo.sh

# The pipeline on your data through the local stack, followed like the demo:
#   make run DATA=/their/images WORK=/their/work [PRESET=imagenet-resnet50d] [DEPLOYMENT=train-imagenet/imagenet]
#            [OVERRIDES='{"init_from": "champion"}']
DEPLOYMENT ?= train-imagenet/demo
run: setup
	@test -n "$(DATA)" -a -n "$(WORK)" || { echo "usage: make run DATA=/images WORK=/work [PRESET=...]"; exit 2; }
	infra/stack.sh start
	infra/stack.sh deploy >/dev/null
	@# the stack's client credentials (Prefect and MLflow refuse requests without them)
	eval "$$(infra/stack.sh env)" && $(VENV)/bin/python -m flows.follow $(DEPLOYMENT) -p data_dir=$(DATA) -p work_dir=$(WORK) $(if $(PRESET),-p preset=$(PRESET)) $(if $(OVERRIDES),-p 'overrides=$(OVERRIDES)')

# Training curves of every run under the demo's work folder (or LOGDIR=...), on port 6006.
LOGDIR ?= .trickflow/work/runs
tensorboard: setup
	$(VENV)/bin/tensorboard --logdir $(LOGDIR) --host 127.0.0.1 --port 6006

stop:
	infra/stack.sh stop

status:
	infra/stack.sh status

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: setup
	$(VENV)/bin/python bench/ingest_bench.py --dask-workers 2
	$(VENV)/bin/python bench/driver_bench.py
	$(VENV)/bin/python bench/tracking_bench.py
	$(VENV)/bin/python bench/input_bench.py
	$(VENV)/bin/python bench/peers_bench.py
	$(VENV)/bin/python bench/resume_bench.py --imagenet

# bench/gpu_check.py on CPU, in a TF-free Keras 3 + JAX env (.venv-gpu, from bench/gpu_env/requirements.txt).
$(GPU_STAMP): $(GPU_REQS)
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) venv --clear -p 3.11 $(GPU_VENV)
	$(UV) pip sync --python $(GPU_VENV)/bin/python $(GPU_REQS)
	@touch $(GPU_STAMP)

# The demo digits as arrays, for the check's convergence part (TFRecords need TensorFlow).
GPU_DATA := bench/data/digits.npz
$(GPU_DATA): components/demo_data.py | $(STAMP)
	$(VENV)/bin/python -m components.demo_data --arrays --output $(GPU_DATA)

gpu-data: $(GPU_DATA)

gpu-check-cpu: $(GPU_STAMP) $(GPU_DATA)
	KERAS_BACKEND=jax $(GPU_VENV)/bin/python bench/gpu_check.py --quick

# The wheels for the GPU machine (Python 3.12, no network, no keras), versions from $(GPU_REQS).
gpu-wheels:
	@mkdir -p .whl
	@for n in $(GPU_WHEELS); do rm -f .whl/$$(echo $$n | tr - _)-*.whl; done
	$(PIP) download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		$(addprefix --platform ,$(PLATFORMS)) -d .whl \
		$$(for n in $(GPU_WHEELS); do grep -m1 "^$$n==" $(GPU_REQS) | cut -d' ' -f1; done)
	@ls -1 .whl/*.whl && du -ch --apparent-size .whl/*.whl | tail -n1

clean: stop
	rm -rf .trickflow
