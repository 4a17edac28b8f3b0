"""The training loop on real TFRecords: smoke run, log format, resume after a kill, float16 path,
two workers, and runs that diverge."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from components.dataset import read_labels
from components.train import AugmentConfig, TrainConfig, checkpoints, run_training
from components.train.data import epoch_records, parse, remaining_records
from components.train.loop import Progress, TrainData, fit_classifier
from tests.conftest import check_events

pytestmark = pytest.mark.integration

TINY = dict(
    model="darknet53-tiny",
    image_size=32,
    batch_size=8,
    epochs=2,
    warmup_steps=2,
    log_every=2,
    checkpoint_every=2,
    shuffle_buffer=64,
    augment=AugmentConfig(flip=False),
)
LOG_LINE = re.compile(r"^Steps:\d+, LR:[ \d.]{6,}, Loss:[ \d.]{4,}, Time:[ \d.]{4,}s$")


class Killed(Exception):
    pass


def test_smoke_training_logs_checkpoints_and_exports(ingested: Path, tmp_path: Path) -> None:
    events = []
    summary = run_training(TrainConfig(**TINY), str(ingested), str(tmp_path), events.append)
    assert summary["steps"] == 8 and summary["resumed_from"] == 0  # 36 records // 8 = 4 per epoch
    assert summary["precision"] == "float32"  # the CPU fallback
    lines = (tmp_path / "train.log").read_text().splitlines()
    assert len(lines) == 4 and all(LOG_LINE.match(line) for line in lines), lines
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and 0 <= history[-1]["top1"] <= 1
    assert json.loads((tmp_path / "config.json").read_text())["model"] == "darknet53-tiny"
    servable = tf.saved_model.load(summary["servable"])
    jpeg = next(iter(tf.data.TFRecordDataset(str(ingested / "validation-00000-of-00001"))))
    image = tf.io.parse_single_example(jpeg, {"image": tf.io.FixedLenFeature([], tf.string)})
    probabilities = servable(tf.stack([image["image"]] * 2)).numpy()
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    assert [e["type"] for e in events][0] == "start" and events[-1]["type"] == "done"
    messages = check_events(events, "train")
    assert messages[0].startswith("training darknet53-tiny to step 8 from step 0 (float32")
    assert [m for m in messages if m.startswith("Steps:")] == lines
    assert sum(m.startswith("epoch ") for m in messages) == 2  # evaluated epochs, not every one
    assert messages[-1].startswith("trained 8 steps: val top-1 ")
    # TensorBoard curves: the logged losses and the evaluated epochs' top-1.
    scalars = {}
    for path in (tmp_path / "tensorboard").rglob("events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                tag = f"{path.parent.name}/{value.tag}"
                scalars.setdefault(tag, []).append(event.step)
    assert scalars["train/loss"] == [2, 4, 6, 8] and scalars["validation/top1"] == [4, 8]


def test_killed_run_resumes_at_the_same_step_lr_and_optimizer_state(
    small_model, ingested: Path, tmp_path: Path
) -> None:
    config = TrainConfig(**TINY)

    def kill_at_step_6(event: dict) -> None:  # after step 6 ran, before its checkpoint
        if event["type"] == "log" and event["step"] == 6:
            raise Killed

    with pytest.raises(Killed):
        run_training(config, str(ingested), str(tmp_path), kill_at_step_6)
    assert checkpoints.steps(tmp_path / "checkpoints") == [2, 4]
    with np.load(tmp_path / "checkpoints" / "ckpt-4.npz") as saved:
        meta = json.loads(bytes(saved["__meta__"]).decode())
        layout = meta["layout"]["optimizer"]
        values = {path: saved[f"optimizer/{i:05d}"] for i, (path, _) in enumerate(layout)}
    momenta = [v for path, v in values.items() if path.endswith("_momentum")]
    assert len(momenta) == len(meta["layout"]["model"]) - sum(
        path.endswith(("moving_mean", "moving_variance")) for path, _ in meta["layout"]["model"]
    )  # one momentum buffer per trainable weight
    iterations = [v for path, v in values.items() if path.endswith("iteration")]
    assert meta["step"] == 4 and int(iterations[0]) == 4

    events = []
    summary = run_training(config, str(ingested), str(tmp_path), events.append)
    assert summary["resumed_from"] == 4 and summary["steps"] == 8
    start = events[0]
    assert start["type"] == "start" and start["start_step"] == 4
    logged = [e for e in events if e["type"] == "log"]
    assert [e["step"] for e in logged] == [6, 8]
    # The LR continues the same schedule: cosine over 8 steps after 2 of warmup.
    assert logged[1]["lr"] == pytest.approx(
        config.base_lr * 8 / 256 * 0.5 * (1 + np.cos(np.pi * 5 / 6)), rel=1e-4
    )
    assert any(m.any() for m in momenta)  # momentum was saved, not reset
    lines = (tmp_path / "train.log").read_text().splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "Steps:2",
        "Steps:4",
        "Steps:6",
        "Steps:6",
        "Steps:8",
    ]  # 5-6 redone after the kill


def test_float16_loss_scaling_path_runs_on_cpu(ingested: Path, tmp_path: Path) -> None:
    config = TrainConfig(
        **{**TINY, "epochs": 1, "precision": "mixed_float16", "eval_every_epochs": 0}
    )
    summary = run_training(config, str(ingested), str(tmp_path))
    assert summary["precision"] == "mixed_float16" and summary["steps"] == 4
    assert np.isfinite(summary["final"]["top1"])


def test_too_little_data_is_a_clear_error(ingested: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fewer than one batch"):
        run_training(TrainConfig(**{**TINY, "batch_size": 1000}), str(ingested), str(tmp_path))


def test_labels_are_read_in_order(ingested: Path) -> None:
    assert read_labels(str(ingested)) == ["n00000000", "n00000001", "n00000002"]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_workers(ingested: Path, tmp_path: Path, ports: list[int], settings: list[str]):
    workers = [f"127.0.0.1:{port}" for port in ports]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "3"}
        command = [sys.executable, "-m", "components.train", "--data", str(ingested)]
        command += ["--output", str(tmp_path / f"worker{index}")]
        command += [arg for s in settings for arg in ("--set", s)]
        processes.append(
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    return processes


def _log_lines(folder: Path) -> list[str]:
    path = folder / "train.log"
    return path.read_text().splitlines() if path.exists() else []


def test_two_workers_killed_and_restarted_continue_as_one(ingested: Path, tmp_path: Path) -> None:
    """MultiWorkerMirroredStrategy from TF_CONFIG, two processes on 127.0.0.1, each with its own
    output folder (only the chief, worker 0, writes checkpoints). Both are killed mid-run and
    started again: every worker continues from the chief's checkpoint, so both log the same
    steps, learning rates and (all-reduced) losses to the end, and only the chief exports."""
    settings = ["model=darknet53-tiny", "image_size=32", "batch_size=8", "epochs=4"]  # as TINY
    settings += ["warmup_steps=1", "log_every=1", "checkpoint_every=2", "shuffle_buffer=64"]
    settings += ["eval_every_epochs=0"]
    chief, other = tmp_path / "worker0", tmp_path / "worker1"
    processes = _start_workers(ingested, tmp_path, _free_ports(2), settings)
    deadline = time.monotonic() + 300
    while checkpoints.steps(chief / "checkpoints")[-1:] < [6]:  # killed past step 6
        assert time.monotonic() < deadline and all(p.poll() is None for p in processes), [
            p.communicate()[0].decode()[-3000:] for p in processes if p.poll() is not None
        ]
        time.sleep(0.05)
    for process in processes:
        process.send_signal(signal.SIGKILL)
        process.wait()
    saved = checkpoints.steps(chief / "checkpoints")[-1]
    assert saved < 16 and not checkpoints.steps(other / "checkpoints")
    before = [len(_log_lines(folder)) for folder in (chief, other)]

    processes = _start_workers(ingested, tmp_path, _free_ports(2), settings)
    outputs = [p.communicate(timeout=300)[0].decode() for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    summary = json.loads((chief / "summary.json").read_text())
    assert summary["workers"] == 2 and summary["devices"] == 2 and summary["steps"] == 16
    assert summary["resumed_from"] == saved
    assert (chief / "model.keras").exists() and not (other / "model.keras").exists()
    # Each worker's own copy of the state, after the kill and the resume: the same weights,
    # optimizer (momenta, step) and random state, bit for bit (BatchNorm's running statistics
    # are each replica's own, from its part of the batch).
    states = [json.loads((folder / "state.json").read_text()) for folder in (chief, other)]
    assert [s["step"] for s in states] == [16, 16]
    for group in ("weights", "optimizer", "random"):
        assert states[0]["state_digest"][group] == states[1]["state_digest"][group], group
    resumed = [_log_lines(folder)[n:] for folder, n in zip((chief, other), before, strict=True)]
    without_time = [[line.split(", Time")[0] for line in lines] for lines in resumed]
    assert without_time[0] == without_time[1]  # same steps, LRs and losses on both workers
    steps = [int(re.match(r"Steps:(\d+)", line).group(1)) for line in resumed[0]]
    assert steps == list(range(saved + 1, 17))
    # The mean loss of the global batch, not its sum over the replicas (which also made the
    # gradients, summed across replicas, twice too large): near ln 3 for 3 classes.
    first_loss = float(re.search(r"Loss: *([\d.]+)", _log_lines(chief)[0]).group(1))
    assert 0.6 < first_loss < 1.6, _log_lines(chief)[0]


def _epoch_batches(images: np.ndarray, labels: np.ndarray, batch: int = 8):
    """TrainData.train over arrays: epoch `epoch`'s own order from its batch `skip` on, then
    further passes in that order."""

    def train(epoch: int, skip: int):
        order = np.random.default_rng(epoch).permutation(len(labels))
        while True:
            for start in range(skip * batch, len(labels), batch):
                take = order[start : start + batch]
                yield images[take], labels[take]
            skip = 0

    return train


def test_a_mid_epoch_resume_continues_the_epochs_order(small_model, tmp_path: Path) -> None:
    """Killed at step 7 of 4-step epochs with a checkpoint at step 6: the resumed run asks for
    epoch 1 from its batch 2, the batches the killed run had not trained on."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (32, 32, 32, 3)).astype(np.uint8)
    labels = (np.arange(32) % 3).astype(np.int32)
    asked = []

    def train(epoch: int, skip: int):
        asked.append((epoch, skip))
        return _epoch_batches(images, labels)(epoch, skip)

    data = TrainData(train, lambda: iter([(images[:8], labels[:8])]), 4, 3)
    config = TrainConfig(
        **{**TINY, "epochs": 3, "checkpoint_every": 3, "log_every": 1, "eval_every_epochs": 0}
    )

    def kill_at_step_7(event: dict) -> None:
        if event["type"] == "log" and event["step"] == 7:
            raise Killed

    with pytest.raises(Killed):
        fit_classifier(config, data, str(tmp_path), kill_at_step_7)
    assert asked == [(0, 0), (1, 0)] and checkpoints.steps(tmp_path / "checkpoints") == [4, 6]
    asked.clear()
    summary = fit_classifier(config, data, str(tmp_path))
    assert summary["resumed_from"] == 6 and asked == [(1, 2), (2, 0)]


def test_an_epochs_records_are_fixed_split_between_workers_and_skipped_exactly(
    ingested: Path,
) -> None:
    """The record stream of an epoch (before decoding) against an independent reference: the
    same arguments give the same order, another epoch another order; two workers read disjoint
    halves that together are the whole set; a resume after k steps leaves exactly the epoch's
    records from position k·B on (k·B/2 of each worker's stream with two workers)."""
    pattern = str(ingested / "train-*")

    def names(ds) -> list[tuple[int, bytes]]:  # file names repeat across class folders
        return [(int(f["label"]), f["filename"].numpy()) for f in map(parse, ds)]

    epoch1 = names(epoch_records(pattern, 1, shuffle_buffer=64))
    assert epoch1 == names(epoch_records(pattern, 1, shuffle_buffer=64))
    assert sorted(epoch1) == sorted(names(epoch_records(pattern, 2, shuffle_buffer=64)))
    assert epoch1 != names(epoch_records(pattern, 2, shuffle_buffer=64))
    assert len(epoch1) == 36 and len(set(epoch1)) == 36
    left = remaining_records(pattern, 1, skip=2, batch_size=8, shuffle_buffer=64)
    assert names(left.take(20)) == epoch1[16:]

    halves = [names(epoch_records(pattern, 1, 64, workers=2, worker=w)) for w in (0, 1)]
    assert not set(halves[0]) & set(halves[1]) and sorted(halves[0] + halves[1]) == sorted(epoch1)
    for worker, half in enumerate(halves):
        rest = remaining_records(pattern, 1, 2, 8, 64, workers=2, worker=worker)
        assert names(rest.take(len(half) - 8)) == half[8:]  # 2 steps x 8 / 2 workers
    with pytest.raises(ValueError, match="2 training shards cannot feed 3 workers"):
        epoch_records(pattern, 1, workers=3)


def test_a_worker_whose_shards_run_short_wraps_to_the_epochs_start(tmp_path: Path) -> None:
    """Three uneven shards (6, 6, 4 records) over two workers: one worker reads a single shard
    while a step takes 4 of its records. Resumed at step 3 of an epoch (12 of its records in),
    each worker continues where the run that never stopped would be: past the end of its
    shards, the epoch's order again from its start, not an empty stream."""
    for shard, count in enumerate((6, 6, 4)):
        with tf.io.TFRecordWriter(str(tmp_path / f"train-{shard:05d}-of-00003")) as writer:
            for i in range(count):
                writer.write(f"{shard}-{i}".encode())
    pattern = str(tmp_path / "train-*")
    for worker in (0, 1):
        order = [r.numpy() for r in epoch_records(pattern, 0, 64, workers=2, worker=worker)]

        def stream(skip: int, count: int, worker: int = worker) -> list[bytes]:
            ds = remaining_records(pattern, 0, skip, 8, 64, workers=2, worker=worker)
            return [r.numpy() for r in ds.take(count)]

        endless, resumed = stream(0, 40), stream(3, 28)
        assert endless[: len(order)] == order and resumed == endless[12:]


def test_a_resumed_epoch_over_many_uneven_shards_is_the_rest_of_the_epoch(tmp_path: Path) -> None:
    """21 shards of 3-40 records: more than the 16 shards read at once, so finished shards are
    replaced by the next ones mid-epoch (ImageNet's case: 1,024 shards). Resumed at many points
    with 1, 2 and 3 workers, each stream is the rest of the one that never stopped; an index
    whose lengths are stale at the same file size is not believed."""
    from components.dataset import record_index_file

    rng = np.random.default_rng(1)
    for shard in range(21):
        path = tmp_path / f"train-{shard:05d}-of-00021"
        lengths = [int(n) for n in rng.integers(1, 50, rng.integers(3, 41))]
        with tf.io.TFRecordWriter(str(path)) as writer:
            for i, n in enumerate(lengths):
                writer.write(f"{shard}-{i}-".encode() + b"x" * n)
        if shard % 3 == 0:  # ingestion's index for some, stale (same total) for one
            index = Path(record_index_file(str(path)))
            index.parent.mkdir(exist_ok=True)
            real = [len(f"{shard}-{i}-") + n for i, n in enumerate(lengths)]
            shown = real[::-1] if shard == 9 and real[0] != real[-1] else real
            index.write_text(json.dumps({"lengths": shown}))
    pattern = str(tmp_path / "train-*")
    for workers in (1, 2, 3):
        for worker in range(workers):
            order = [r.numpy() for r in epoch_records(pattern, 2, 30, 0, workers, worker)]
            for skip in (1, 7, len(order) * workers // 4 // 2):
                start = skip * 4 // workers
                rest = remaining_records(pattern, 2, skip, 4, 30, 0, workers, worker)
                assert [r.numpy() for r in rest.take(len(order) - start)] == order[start:], (
                    workers, worker, skip,
                )  # fmt: skip


def _bytes_read() -> int:
    """Bytes this process has read through system calls so far (Linux)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


@pytest.mark.parametrize("indexed", [True, False], ids=["ingestion's index", "headers read"])
def test_a_run_resumed_late_in_an_epoch_reads_less_than_a_shard_before_its_first_step(
    tmp_path: Path, indexed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real photos in 4 shards of ~90 records, a shuffle buffer smaller than the epoch, one and
    two workers: resumed at ~90% of the epoch, the stream is record for record the rest of the
    epoch that never stopped, and the pipeline has read less than its smallest shard when the
    first batch is ready (it read ~90% of the epoch when it skipped what it had seen). Without
    the index ingestion writes (older datasets, TFRecords made elsewhere), the records' lengths
    come from their headers alone."""
    from bench.photos import write_photo_folders
    from components.dataset import RECORD_INDEX
    from components.ingest import IngestConfig, run_ingest
    from components.train import data as data_module
    from components.train.data import train_dataset

    source = write_photo_folders(tmp_path / "photos", 400, classes=4, size=(150, 200))
    data = tmp_path / "data"
    run_ingest(IngestConfig(source=str(source), output=str(data), train_shards=4))
    assert len(list((data / RECORD_INDEX).glob("train-*.json"))) == 4
    if indexed:  # a view's shards are links: the index is found beside the shard linked to
        view = tmp_path / "view"
        view.mkdir()
        for shard in data.glob("train-*"):
            (view / shard.name).symlink_to(Path("..") / "data" / shard.name)
        monkeypatch.setattr(data_module, "_scanned_lengths", None)  # headers never read
        for shard in sorted(view.iterdir()):
            lengths = data_module.record_lengths(str(shard))
            assert len(lengths) == sum(1 for _ in tf.data.TFRecordDataset(str(shard)))
        monkeypatch.undo()
    else:
        for index in (data / RECORD_INDEX).iterdir():
            index.unlink()
    pattern = str(data / "train-*")
    shards = sorted(data.glob("train-*"))
    smallest = min(p.stat().st_size for p in shards)
    records = sum(1 for p in shards for _ in tf.data.TFRecordDataset(str(p)))
    for workers in (1, 2):
        for worker in range(workers):
            order = [r.numpy() for r in epoch_records(pattern, 3, 100, 0, workers, worker)]
            skip = int(0.9 * len(order)) * workers // 8  # steps of 8 records
            start = skip * 8 // workers
            rest = remaining_records(pattern, 3, skip, 8, 100, 0, workers, worker)
            assert [r.numpy() for r in rest.take(len(order) - start)] == order[start:]

    augment = AugmentConfig(flip=False)
    skip = int(0.9 * records) // 8
    for _attempt in ("warm", "measured"):
        before = _bytes_read()
        batch = next(iter(train_dataset(pattern, 8, 64, augment, 100, 0, 3, skip)))
        read = _bytes_read() - before
    assert batch[0].shape == (8, 64, 64, 3)
    assert read < smallest, f"read {read:,} bytes to resume; the smallest shard has {smallest:,}"


def test_the_command_trains_with_mixup_under_xla(ingested: Path, tmp_path: Path) -> None:
    """What a single TensorFlow GPU does by default, on the CPU: the whole step compiled by XLA,
    mixup's λ drawn inside it, through the command line (mixup crashed at the first step)."""
    command = [sys.executable, "-m", "components.train", "--data", str(ingested)]
    command += ["--output", str(tmp_path / "run")]
    settings = ["model=darknet53-tiny", "image_size=32", "batch_size=8", "epochs=1"]
    settings += ["jit_compile=true", "mixup_alpha=0.2", "warmup_steps=1", "log_every=2"]
    command += [arg for s in settings for arg in ("--set", s)]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["jit_compile"] is True and summary["steps"] == 4
    assert "XLA on" in done.stdout + done.stderr


def test_a_diverging_run_stops_and_names_the_step(small_model, tmp_path: Path) -> None:
    """An absurd learning rate: the loss leaves the finite numbers and the run says where."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 32, 32, 3)).astype(np.uint8)
    labels = (np.arange(64) % 3).astype(np.int32)

    def endless(epoch: int, skip: int):
        while True:
            for start in range(0, 64, 8):
                yield images[start : start + 8], labels[start : start + 8]

    data = TrainData(endless, lambda: iter([(images[:8], labels[:8])]), 8, 3)
    config = TrainConfig(**{**TINY, "base_lr": 1e9, "warmup_steps": 0})
    with pytest.raises(FloatingPointError, match=r"at step \d+: lower base_lr"):
        fit_classifier(config, data, str(tmp_path))


def test_float16_runs_whose_updates_are_all_skipped_stop() -> None:
    """Loss scaling skips an update whose gradients overflow; N skipped in a row is an error."""

    class Optimizer:
        iterations = keras.Variable(5, dtype="int64")
        skipped_steps = keras.Variable(5, dtype="int64")
        dynamic_scale = keras.Variable(2.0**-10)

    class Model:
        optimizer = Optimizer()

    progress = Progress(
        TrainConfig(max_skipped_steps=3, log_every=1000), 100, 1000, None, None, None, None, True
    )
    progress.set_model(Model())
    progress.start(0)
    for batch in range(1, 4):  # checked before the call at step 1, the next at step 4
        progress.on_train_batch_begin(batch)
        Optimizer.skipped_steps.assign_add(1)
    with pytest.raises(FloatingPointError, match="every update from step 1 to 4 was skipped"):
        progress.on_train_batch_begin(4)
    Optimizer.skipped_steps.assign_add(2)  # 3 steps, 2 skipped: one update went through
    progress.on_train_batch_begin(7)


def test_the_log_window_spans_epochs_in_loss_and_time() -> None:
    """Each log line averages the loss over the steps since the previous line, also when they
    cross an epoch (a new fit() call, whose running loss starts again)."""
    import io

    class Optimizer:
        iterations = keras.Variable(0, dtype="int64")

    class Model:
        optimizer = Optimizer()

    events = []
    config = TrainConfig(log_every=4, checkpoint_every=1000)
    progress = Progress(config, 3, 12, lambda s: 0.1, None, io.StringIO(), events.append, False)
    progress.set_model(Model())
    losses = iter([1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0])
    for epoch_start in (0, 3, 6):
        progress.start(epoch_start)
        total = 0.0
        for batch in range(3 if epoch_start < 6 else 2):
            total += next(losses)
            progress.on_train_batch_end(batch, {"loss": np.array([total / (batch + 1)])})
    assert [e["step"] for e in events] == [4, 8]
    assert events[0]["loss"] == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert events[1]["loss"] == pytest.approx((6 + 8 + 10 + 12) / 4)


def test_several_steps_per_call_train_the_same_and_report_at_their_multiples(
    small_model, tmp_path: Path
) -> None:
    """steps_per_execution 4 against 1 on the same batches: the same weights at the end (the
    same steps, LRs and random draws, only fewer trips to the host); log lines and checkpoints
    at multiples of 4; an epoch of 10 batches trains 8 (whole calls only); a log or
    checkpoint interval that is not a multiple is refused; a diverging run still stops."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (80, 32, 32, 3)).astype(np.uint8)
    labels = (np.arange(80) % 3).astype(np.int32)

    train = _epoch_batches(images, labels)
    weights = {}
    for every, batches in ((1, 8), (4, 8), (4, 10)):
        data = TrainData(train, lambda: iter([(images[:8], labels[:8])]), batches, 3)
        config = TrainConfig(**{**TINY, "log_every": 4, "checkpoint_every": 4,
                                "eval_every_epochs": 0, "steps_per_execution": every})  # fmt: skip
        folder = tmp_path / f"every-{every}-{batches}"
        summary = fit_classifier(config, data, str(folder))
        weights[every, batches] = [np.asarray(w) for w in keras.saving.load_model(
            folder / "model.keras", compile=False).get_weights()]  # fmt: skip
        steps = [int(re.match(r"Steps:(\d+)", line).group(1)) for line in _log_lines(folder)]
        assert summary["steps"] == 16 and steps == [4, 8, 12, 16], (every, batches)
        assert checkpoints.steps(folder / "checkpoints") == [12, 16]  # the last two kept
    for a, b in zip(weights[1, 8], weights[4, 8], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"log_every \(6\) must be a multiple"):
        TrainConfig(**{**TINY, "log_every": 6, "checkpoint_every": 4, "steps_per_execution": 4})
    config = TrainConfig(**{**TINY, "base_lr": 1e9, "warmup_steps": 0, "log_every": 4,
                            "checkpoint_every": 4, "steps_per_execution": 4})  # fmt: skip
    with pytest.raises(FloatingPointError, match=r"at step \d+: lower base_lr"):
        fit_classifier(config, data, str(tmp_path / "diverging"))


def test_batches_copied_ahead_to_a_device_train_through_keras(
    ingested: Path, small_model, tmp_path: Path
) -> None:
    """The input a single TensorFlow GPU gets (batches copied ahead to the device by
    prefetch_to_device, the pipeline's last step), here to the CPU device, with several steps
    per call: its batches are whole, and Keras trains from it."""
    from components.train.data import train_dataset

    pattern = str(ingested / "train-*")
    augment = AugmentConfig(flip=False)

    ahead = train_dataset(pattern, 8, 32, augment, 64, 0, 0, 0, device="/cpu:0")
    for images, labels in ahead.take(3):  # (the decode may swap neighbours: shapes, not order)
        assert images.shape == (8, 32, 32, 3) and images.dtype == tf.uint8
        assert labels.shape == (8,) and "CPU:0" in images.device
    data = TrainData(
        lambda epoch, skip: train_dataset(
            pattern, 8, 32, augment, 64, 0, epoch, skip, device="/cpu:0"
        ),
        lambda: iter([]),
        4,
        3,
    )
    config = TrainConfig(**{**TINY, "epochs": 1, "log_every": 2, "checkpoint_every": 2,
                            "eval_every_epochs": 0, "steps_per_execution": 2})  # fmt: skip
    with pytest.raises(ValueError, match="validation set is empty"):  # trained, then evaluated
        fit_classifier(config, data, str(tmp_path))
    steps = [int(re.match(r"Steps:(\d+)", line).group(1)) for line in _log_lines(tmp_path)]
    assert steps == [2, 4]
