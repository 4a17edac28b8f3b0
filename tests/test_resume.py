"""Resuming a training folder: only with the configuration that made its checkpoints; history and
summary files are replaced whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.atomic import write_json
from components.train import TrainConfig
from components.train.loop import check_resumable


def _folder_with_checkpoints(tmp_path: Path, config: TrainConfig) -> Path:
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "ckpt-10.npz").write_bytes(b"")  # only its name is looked at
    (tmp_path / "config.json").write_text(config.model_dump_json())
    return tmp_path


def test_a_changed_batch_size_never_resumes_silently(tmp_path: Path) -> None:
    out = _folder_with_checkpoints(tmp_path, TrainConfig(batch_size=128))
    with pytest.raises(ValueError, match=r"batch_size: 128 -> 64"):
        check_resumable(out, TrainConfig(batch_size=64))


def test_logging_and_checkpoint_cadence_may_change_on_resume(tmp_path: Path) -> None:
    out = _folder_with_checkpoints(tmp_path, TrainConfig())
    check_resumable(out, TrainConfig(log_every=7, checkpoint_every=9, eval_every_epochs=0))


def test_a_folder_without_checkpoints_takes_any_configuration(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(TrainConfig(batch_size=128).model_dump_json())
    check_resumable(tmp_path, TrainConfig(batch_size=64))


def test_json_is_replaced_whole_and_no_temporary_file_stays(tmp_path: Path) -> None:
    path = tmp_path / "history.json"
    write_json(path, [{"epoch": 1}])
    write_json(path, [{"epoch": 1}, {"epoch": 2}])
    assert json.loads(path.read_text()) == [{"epoch": 1}, {"epoch": 2}]
    assert not list(tmp_path.glob(".*tmp"))
