"""Shared fixtures: tiny real-image datasets made on the fly, and quiet, isolated tool state."""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# XLA compiles the tests' train steps (and the training subprocesses they start) without LLVM's
# optimizations: a minute less per compiled step on these CPUs. Which ops XLA can compile, what
# the tests are after, is decided before that stage.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# One ingestion process whatever the machine (the local job forks a process per core);
# tests/test_dask.py and the flow's every-stage test ask for processes themselves.
os.environ.setdefault("TRICKFLOW_INGEST_PROCESSES", "1")
# Never the user's Prefect (prefect.toml points at the local stack and its profile): a temporary
# home and profile, set before Prefect is imported anywhere; environment variables outrank
# prefect.toml.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="trickflow-test-prefect-")
os.environ["PREFECT_PROFILES_PATH"] = os.path.join(os.environ["PREFECT_HOME"], "profiles.toml")


def jpeg_bytes(array: np.ndarray, **save_args) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="JPEG", **save_args)
    return out.getvalue()


def pattern_image(label: int, index: int, size: tuple[int, int] = (40, 48)) -> np.ndarray:
    """A class-dependent color pattern (H, W, 3) uint8 that a tiny net can learn."""
    rng = np.random.default_rng(label * 1000 + index)
    height, width = size
    base = np.zeros((height, width, 3), np.float32)
    base[..., label % 3] = 200
    stripes = (np.arange(width) // (4 + 2 * label)) % 2
    base += stripes[None, :, None] * 40
    base += rng.normal(0, 10, base.shape)
    return np.clip(base, 0, 255).astype(np.uint8)


def make_class_folders(root: Path, classes: int = 3, train: int = 8, val: int = 3) -> Path:
    for split, count in (("train", train), ("val", val)):
        for label in range(classes):
            folder = root / split / f"n0{label:07d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                index = i if split == "train" else 100 + i
                (folder / f"img_{i}.JPEG").write_bytes(jpeg_bytes(pattern_image(label, index)))
    return root


@pytest.fixture
def class_folders(tmp_path: Path) -> Path:
    return make_class_folders(tmp_path / "src")


def folder_files(root: Path) -> dict[str, bytes]:
    """Every file under `root` (its subfolders too), by path relative to it, with its bytes."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


@pytest.fixture(autouse=True)
def _isolated_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test writes to the user's registry."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    (tmp_path / "mlflow").mkdir(exist_ok=True)
    monkeypatch.setenv("TRICKFLOW_HOME", str(tmp_path / "trickflow"))


@pytest.fixture(scope="session")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny class-folder dataset ingested once per session (read-only for tests)."""
    from components.ingest import IngestConfig, run_ingest

    root = tmp_path_factory.mktemp("ingested")
    source = make_class_folders(root / "src", classes=3, train=12, val=4)
    run_ingest(IngestConfig(source=str(source), output=str(root / "data"), train_shards=2))
    return root / "data"


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server (and database) for the flow tests of a session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def check_events(events: list[dict], component: str) -> list[str]:
    """Asserts that each event has the shared shape (components/events.py); returns the messages
    a person would follow (INFO and above)."""
    from components.events import TYPES

    assert events, f"{component} reported nothing"
    for event in events:
        assert event["component"] == component, event
        assert event["type"] in TYPES, event
        assert isinstance(event["message"], str) and event["message"], event
        assert "\n" not in event["message"], event
        assert isinstance(event["level"], int), event
        if event["type"] == "progress":
            assert 0 <= event["done"] <= event["total"], event
    return [e["message"] for e in events if e["level"] >= 20]


def small_classifier(name: str, num_classes: int, input_size: int = 32, **_):
    """A stand-in for the model families where the model is not what a test is about (the
    training loop's bookkeeping, the train step's tricks): conv-BN-LeakyReLU, a residual block
    with a zero-γ BatchNorm, max and average pooling, a float32 dense head. Compiles and traces
    in seconds; same signature as `components.train.models.create_model`."""
    import keras
    from keras import layers

    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = layers.Conv2D(8, 3, strides=2, use_bias=False, name="stem_conv")(inputs)
    x = layers.LeakyReLU(0.1)(layers.BatchNormalization(name="stem_bn")(x))
    y = layers.Conv2D(8, 3, padding="same", use_bias=False, name="block1_conv")(x)
    y = layers.BatchNormalization(gamma_initializer="zeros", name="block1_b_bn")(y)
    x = layers.Add()([x, y])
    x = layers.MaxPooling2D(2)(layers.ZeroPadding2D(1)(x))
    x = layers.AveragePooling2D(2, padding="same")(x)
    x = layers.GlobalAveragePooling2D(dtype="float32")(x)
    logits = layers.Dense(num_classes, dtype="float32", name="logits")(x)  # named: checkpoints
    return keras.Model(inputs, logits, name=name)


@pytest.fixture
def small_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The training loop builds `small_classifier` whatever model its config names."""
    from components.train import loop

    monkeypatch.setattr(loop, "create_model", small_classifier)


def pytest_collection_modifyitems(items: list) -> None:
    """The longest tiers first: the end-to-end test, then the integration tests, then the unit
    tests (a stable sort, so files keep their order within a tier). With several pytest
    processes (`make test`), the long ones then overlap the many short ones instead of
    running alone at the end."""

    def tier(item) -> int:
        if item.get_closest_marker("e2e"):
            return 0
        return 1 if item.get_closest_marker("integration") else 2

    items.sort(key=tier)


def reachable_folder() -> Path:
    """A new folder under /tmp that the `postgres` user can enter (pytest's own are closed to
    other users): the stack's PostgreSQL runs as that user when the tests run as root."""
    folder = Path(tempfile.mkdtemp(prefix="trickflow-pg-"))
    folder.chmod(0o711)
    return folder


@pytest.fixture
def postgres_registry(tmp_path: Path) -> Iterator[str]:
    """An MLflow backend store on a PostgreSQL server started by `infra/stack.sh db` (its data
    in a folder the `postgres` user can enter, for runs as root); stopped afterwards."""
    import shutil
    import subprocess

    from tests.test_e2e import free_port

    port = free_port()
    reachable = reachable_folder()
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "TRICKFLOW_HOME": str(tmp_path / "stack"), "TRICKFLOW_DB": "postgres",
           "TRICKFLOW_PG_PORT": str(port), "TRICKFLOW_PG_DATA": str(reachable / "pg")}  # fmt: skip
    stack = [str(repo / "infra" / "stack.sh")]
    try:
        started = subprocess.run([*stack, "db"], cwd=repo, env=env, capture_output=True,
                                 text=True, timeout=180)  # fmt: skip
        assert started.returncode == 0, started.stdout + started.stderr
        yield started.stdout.strip().splitlines()[-1]
    finally:
        stopped = subprocess.run([*stack, "stop"], cwd=repo, env=env, capture_output=True,
                                 text=True, timeout=120)  # fmt: skip
        assert stopped.returncode == 0, stopped.stderr
        shutil.rmtree(reachable, ignore_errors=True)
