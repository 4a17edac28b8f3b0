"""The training loop: one readable function from TFRecords to checkpoints and a servable.

    run_training(config, data_dir, output_dir, on_event=print)

Steps are counted globally; the learning rate is a function of the optimizer's step, and the model,
optimizer and step are checkpointed together every `checkpoint_every` steps and at each epoch end,
so a killed run restarted with the same output_dir resumes at the same step, LR and momentum.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from components import dataset
from components.train import tricks
from components.train.config import TrainConfig
from components.train.data import eval_dataset, train_dataset
from components.train.export import export_servable
from components.train.models import create_model
from components.train.schedules import WarmupCosine, WarmupPiecewise, scaled_learning_rate

log = logging.getLogger(__name__)
Event = dict


# Settings that do not change what is trained: a resumed run may change them.
RESUMABLE_CHANGES = {"log_every", "checkpoint_every", "eval_every_epochs", "jit_compile"}


def write_json_atomically(path: Path, value) -> None:
    """Writes JSON to a temporary file and renames it: a kill mid-write leaves the old file."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temp.open("w") as handle:
        handle.write(json.dumps(value, indent=2))
        handle.flush()
        os.fsync(handle.fileno())  # the data is on disk before the rename makes it visible
    os.replace(temp, path)


def check_resumable(out: Path, config: TrainConfig) -> None:
    """A folder with checkpoints resumes only with the configuration that made them; any other
    change (batch size, epochs, learning rate...) would silently change the schedule."""
    saved_path = out / "config.json"
    if not (out / "checkpoints").is_dir() or not saved_path.exists():
        return
    # Through the model, so that fields added since (with their defaults) are no difference.
    saved = json.loads(TrainConfig(**json.loads(saved_path.read_text())).model_dump_json())
    new = json.loads(config.model_dump_json())
    changed = sorted(k for k in new.keys() | saved.keys() if saved.get(k) != new.get(k))
    changed = [k for k in changed if k not in RESUMABLE_CHANGES]
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise ValueError(
            f"{out} holds checkpoints of another configuration ({details}); train into a new "
            "folder, or resume with the configuration they were made with"
        )


def _records(data_dir: str) -> dict[str, int]:
    return dataset.read_metadata(data_dir)["records"]


def build_schedule(config: TrainConfig, steps_per_epoch: int, total_steps: int):
    if config.warmup_steps is not None:
        warmup = config.warmup_steps
    else:
        warmup = round(config.warmup_epochs * steps_per_epoch)
    warmup = min(warmup, total_steps - 1)
    if config.schedule == "step":
        return WarmupPiecewise(list(config.step_boundaries), list(config.step_values), warmup)
    peak = scaled_learning_rate(config.base_lr, config.batch_size)
    return WarmupCosine(peak, total_steps, warmup)


def build_optimizer(config: TrainConfig, model: keras.Model, schedule, precision: str):
    """SGD with Nesterov momentum, with loss scaling for float16.

    Weight decay is not the optimizer's (Keras' is decoupled, applied outside the momentum, which
    makes 1e-4 act about ten times weaker than in the paper): it is an L2 term in the loss,
    `tricks.weight_decay_loss`, as MXNet and the original's kernel regularizer apply it.
    """
    optimizer = keras.optimizers.SGD(
        learning_rate=schedule, momentum=config.momentum, nesterov=config.nesterov
    )
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    return optimizer


def evaluate_model(predict, dataset: tf.data.Dataset, num_classes: int) -> dict:
    """Top-1 / top-5 accuracy of `predict` (images -> logits) over center-crop (image, label)."""
    k = min(5, num_classes)
    correct1 = correct5 = total = 0
    for images, labels in dataset:
        logits = predict(images)
        labels = tf.cast(labels, tf.int32)
        correct1 += int(tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, 1), tf.int32)))
        correct5 += int(tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, k), tf.int32)))
        total += int(labels.shape[0])
    if total == 0:
        raise ValueError("the validation set is empty")
    return {"top1": correct1 / total, "top5": correct5 / total, "count": total}


def run_training(
    config: TrainConfig,
    data_dir: str,
    output_dir: str,
    on_event: Callable[[Event], None] | None = None,
) -> dict:
    """Trains (or resumes) into `output_dir`; returns a summary with the servable's path."""
    on_event = on_event or (lambda e: None)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_resumable(out, config)
    write_json_atomically(out / "config.json", json.loads(config.model_dump_json()))
    labels = dataset.read_labels(data_dir)
    num_classes = len(labels)
    records = _records(data_dir)
    if records["train"] < config.batch_size:
        raise ValueError(
            f"{data_dir}: {records['train']} train records are fewer than one batch "
            f"({config.batch_size})"
        )
    steps_per_epoch = records["train"] // config.batch_size
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)

    gpus = len(tf.config.list_physical_devices("GPU"))
    precision = tricks.resolve_precision(config.precision, gpus)
    jit = bool(gpus) if config.jit_compile is None else config.jit_compile
    strategy = tf.distribute.MirroredStrategy() if gpus > 1 else tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by {replicas} devices")
    tf.random.set_seed(config.seed)
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        with strategy.scope():
            model = create_model(
                config.model,
                num_classes,
                width=config.width,
                input_size=config.image_size,
                data_format=config.data_format,
                zero_gamma=config.zero_gamma,
            )
            schedule = build_schedule(config, steps_per_epoch, total_steps)
            optimizer = build_optimizer(config, model, schedule, precision)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    manager = tf.train.CheckpointManager(checkpoint, str(out / "checkpoints"), max_to_keep=2)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    start_step = int(optimizer.iterations.numpy())

    pattern = dataset.shard_pattern(data_dir, dataset.TRAIN)
    train_ds = strategy.experimental_distribute_dataset(
        train_dataset(
            pattern,
            config.batch_size,
            config.image_size,
            config.augment,
            config.shuffle_buffer,
            config.seed + start_step,
        )
    )
    val_ds = eval_dataset(
        dataset.shard_pattern(data_dir, dataset.VALIDATION), config.batch_size, config.image_size
    )

    decayed = tricks.decay_variables(model) if config.no_bias_decay else model.trainable_variables

    def decay_loss():
        return tricks.weight_decay_loss(decayed, config.weight_decay)

    def replica_step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)  # (B/replicas, K) float32
            per_example = tricks.smoothed_cross_entropy(labels, logits, config.label_smoothing)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=config.batch_size)
            loss += tf.nn.scale_regularization_loss(decay_loss())  # (per replica)
            scaled_loss = optimizer.scale_loss(loss) if scaled else loss
        grads = tape.gradient(scaled_loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    # One traced function for every evaluation; the last, smaller batch is a second shape only.
    predict = tf.function(lambda images: model(images, training=False), reduce_retracing=True)

    @tf.function(jit_compile=jit)
    def train_step(images, labels):
        losses = strategy.run(replica_step, args=(images, labels))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    on_event(
        {
            "type": "start",
            "total_steps": total_steps,
            "steps_per_epoch": steps_per_epoch,
            "start_step": start_step,
            "precision": precision,
            "devices": replicas,
            "jit_compile": jit,
            "num_classes": num_classes,
        }
    )
    history_path = out / "history.json"
    history = json.loads(history_path.read_text()) if history_path.exists() else []
    log_file = (out / "train.log").open("a")
    step, last_time, window = start_step, time.perf_counter(), []
    iterator = iter(train_ds)
    while step < total_steps:
        batch_images, batch_labels = next(iterator)
        loss = float(train_step(batch_images, batch_labels))
        done = int(optimizer.iterations.numpy())
        if done == step:  # float16 overflow: the loss scale dropped and the update was skipped
            continue
        step = done
        window.append(loss)
        if not math.isfinite(loss) and not scaled:
            raise FloatingPointError(f"loss became {loss} at step {step}; lower the learning rate")
        if step % config.log_every == 0 or step == total_steps:
            now = time.perf_counter()
            lr = float(schedule(step - 1))
            # The original's log line, word for word.
            line = (
                f"Steps:{step}, LR:{lr:6.4f}, Loss:{np.mean(window):4.2f}, "
                f"Time:{now - last_time:4.1f}s"
            )
            log_file.write(line + "\n")
            log_file.flush()
            on_event(
                {
                    "type": "log",
                    "step": step,
                    "total_steps": total_steps,
                    "lr": lr,
                    "loss": float(np.mean(window)),
                    "seconds": now - last_time,
                    "line": line,
                }
            )
            last_time, window = now, []
        epoch_end = step % steps_per_epoch == 0 or step == total_steps
        if step % config.checkpoint_every == 0 or epoch_end:
            manager.save(checkpoint_number=step)
        if epoch_end:
            epoch = math.ceil(step / steps_per_epoch)
            due = config.eval_every_epochs and epoch % config.eval_every_epochs == 0
            entry = {"epoch": epoch, "step": step, "lr": float(schedule(step - 1))}
            if due or step == total_steps:
                entry.update(evaluate_model(predict, val_ds, num_classes))
            history.append(entry)
            write_json_atomically(history_path, history)
            on_event({"type": "epoch", **entry, "epochs": math.ceil(total_steps / steps_per_epoch)})
    log_file.close()

    model.save_weights(str(out / "model.weights.h5"))
    servable = export_servable(model, config.image_size, labels, str(out / "servable"))
    final = history[-1] if history else evaluate_model(predict, val_ds, num_classes)
    summary = {
        "steps": step,
        "resumed_from": start_step,
        "precision": precision,
        "servable": servable,
        "num_classes": num_classes,
        "history": history,
        "final": final,
    }
    write_json_atomically(out / "summary.json", summary)
    on_event({"type": "done", **summary})
    return summary
