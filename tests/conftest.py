"""Shared fixtures: tiny real-image datasets made on the fly, and quiet, isolated tool state."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Never the user's Prefect (prefect.toml points at the local stack): a temporary home, set before
# Prefect is imported anywhere; environment variables outrank prefect.toml.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="trickflow-test-prefect-")


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
