"""Atomic writes: a reader sees the old file or the new, and a failed write leaves nothing."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from components import atomic
from components.train import checkpoints


def test_write_json_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "report.json"
    atomic.write_json(path, {"a": 1})
    atomic.write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.json"]


def _full_disk(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "data" / "metadata.json"
    atomic.write_json(path, {"old": True})
    with mock.patch.object(atomic.os, "fsync", _full_disk), pytest.raises(OSError):
        atomic.write_json(path, {"new": True})
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in path.parent.iterdir()] == ["metadata.json"]


def test_a_failed_checkpoint_write_leaves_no_temporary_and_old_ones_are_swept(
    tmp_path: Path,
) -> None:
    """Once every failed write left a `*.tmp`: a full disk stayed full across retries."""
    weights = [np.ones((3, 3), np.float32)]

    class Variable:
        path, shape = "dense/kernel", (3, 3)

        def numpy(self) -> np.ndarray:
            return weights[0]

    groups = {"model": [Variable()]}
    tmp_path = tmp_path / "checkpoints"
    checkpoints.save(tmp_path, 1, groups, {})
    with mock.patch.object(checkpoints.os, "fsync", _full_disk), pytest.raises(OSError):
        checkpoints.save(tmp_path, 2, groups, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-1.npz"]

    # What a killed writer left an hour ago goes with the next save; a fresh one stays (it may
    # be another writer's, still running).
    stale, fresh = tmp_path / ".ckpt-3.npz.1.a.tmp", tmp_path / ".ckpt-4.npz.2.b.tmp"
    stale.write_bytes(b"x" * 100)
    fresh.write_bytes(b"x")
    old = time.time() - 2 * atomic.STALE_SECONDS
    os.utime(stale, (old, old))
    checkpoints.save(tmp_path, 5, groups, {})
    assert not stale.exists() and fresh.exists()
