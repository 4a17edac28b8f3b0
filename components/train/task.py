"""The product's training task: TFRecords in, a trained classifier and its servable out.

    run_training(config, data_dir, output_dir, on_event) -> summary  # events: components/events.py

The TensorFlow side around the backend-agnostic loop: tf.data reads and decodes the shards on the
CPU, tf.distribute spreads the step over this machine's GPUs (or the workers of `TF_CONFIG`),
the curves go to TensorBoard event files in `<output>/tensorboard`, and the result is exported
as a SavedModel that takes JPEG bytes.
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from components import atomic, dataset, events
from components.train.config import TrainConfig
from components.train.data import epoch_records, eval_dataset, train_dataset
from components.train.devices import Devices, detect
from components.train.export import export_servable
from components.train.loop import COMPONENT, TrainData, fit_classifier
from components.train.loop import log as loop_log


def tfrecord_data(config: TrainConfig, data_dir: str, found: Devices | None = None) -> TrainData:
    """The loop's data from an ingested folder; errors name the folder. In a cluster, this
    worker's part of each epoch (`found`: the devices, for the workers' layout)."""
    workers, worker = (found.workers, found.worker) if found else (1, 0)
    # One TensorFlow GPU without a strategy: batches are copied to it ahead of their step.
    device = "/gpu:0" if found and found.kind == "gpu" and not found.distributed else None
    if device and keras.backend.backend() != "tensorflow":
        device = None
    labels = dataset.read_labels(data_dir)
    records = dataset.read_metadata(data_dir)["records"]
    if records["train"] < config.batch_size:
        raise ValueError(
            f"{data_dir}: {records['train']} train records are fewer than one batch "
            f"({config.batch_size})"
        )
    train_pattern = dataset.shard_pattern(data_dir, dataset.TRAIN)
    epoch_records(train_pattern, 0, workers=workers, worker=worker)  # enough shards? (lazy)
    val_pattern = dataset.shard_pattern(data_dir, dataset.VALIDATION)
    return TrainData(
        train=lambda epoch, skip: train_dataset(
            train_pattern,
            config.batch_size,
            config.image_size,
            config.augment,
            config.shuffle_buffer,
            config.seed,
            epoch,
            skip,
            workers,
            worker,
            device,
        ),
        validation=lambda: eval_dataset(val_pattern, config.batch_size, config.image_size),
        steps_per_epoch=records["train"] // config.batch_size,
        num_classes=len(labels),
    )


class TensorBoardEvents:
    """The loop's events as TensorBoard scalars under `folder`: train/ (loss, learning rate,
    images per second at each logged step) and validation/ (top-1, top-5 at each evaluated
    epoch), so `tensorboard --logdir` draws the curves while the run goes on."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.train = self.validation = None

    def __call__(self, event: dict) -> None:
        if event["type"] == "start":
            # Only now: a writer is a TensorFlow op, and MultiWorkerMirroredStrategy must be
            # created before the first one. Other workers of a cluster write nothing.
            if event["chief"]:
                self.train = tf.summary.create_file_writer(str(self.folder / "train"))
                self.validation = tf.summary.create_file_writer(str(self.folder / "validation"))
        elif self.train is None:
            return
        elif event["type"] == "log":
            with self.train.as_default(step=event["step"]):
                tf.summary.scalar("loss", event["loss"])
                tf.summary.scalar("learning_rate", event["lr"])
                tf.summary.scalar("images_per_second", event["images_per_second"])
            self.train.flush()
        elif event["type"] == "epoch" and "top1" in event:
            with self.validation.as_default(step=event["step"]):
                tf.summary.scalar("top1", event["top1"])
                tf.summary.scalar("top5", event["top5"])
            self.validation.flush()


def run_training(
    config: TrainConfig,
    data_dir: str,
    output_dir: str,
    on_event: events.OnEvent | None = None,
) -> dict:
    """Trains (or resumes) into `output_dir`; returns the summary with the servable's path.
    Progress goes to `on_event` (components/events.py; default: the loop's logger). The dataset
    is held against rewriting while it is read (components/dataset.py)."""
    on_event = on_event or events.log_to(loop_log)
    with dataset.locked(data_dir, False, lambda m: on_event(events.stage(COMPONENT, m))):
        return _run_training(config, data_dir, output_dir, on_event)


def _run_training(
    config: TrainConfig, data_dir: str, output_dir: str, on_event: events.OnEvent
) -> dict:
    found = detect()  # first: a cluster's strategy must exist before any TensorFlow op
    data = tfrecord_data(config, data_dir, found)
    board = TensorBoardEvents(Path(output_dir) / "tensorboard")

    def publish(event: dict) -> None:
        board(event)
        on_event(event)

    summary = fit_classifier(config, data, output_dir, publish, found)
    if summary["chief"]:  # other workers of a cluster write nothing
        model = keras.saving.load_model(summary["model_file"], compile=False)
        labels = dataset.read_labels(data_dir)
        summary["servable"] = export_servable(
            model, config.image_size, labels, f"{output_dir}/servable"
        )
        atomic.write_json(Path(output_dir) / "summary.json", summary)
    final = summary["final"]
    message = (
        f"trained {summary['steps']:,} steps: val top-1 {final['top1']:.4f}, "
        f"top-5 {final['top5']:.4f}"
    )
    on_event(events.event(COMPONENT, "done", message, **summary))
    return summary
