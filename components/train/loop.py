"""The training loop, on Keras' own trainer, for any Keras backend.

    fit_classifier(config, data, output_dir, on_event) -> summary  # events: components/events.py

It reads as its steps: devices and precision, model and optimizer, restore, then per epoch the
data, the steps (`model.fit`, whose compiled step augments, mixes, distills and updates on the
accelerator), logging, checkpoints and evaluation; at the end, export. Steps are counted
globally and checkpointed with the optimizer and the random generators every
`checkpoint_every` steps and at each epoch end, so a killed run restarted with the same
output_dir resumes at the same step, learning rate and momentum. Nothing here imports a
framework: the product runs it on TensorFlow (`components.train.task`), the GPU check on JAX.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from components import atomic, events
from components.train import checkpoints, tricks
from components.train import devices as device_discovery
from components.train.config import TrainConfig
from components.train.models import create_model, is_channels_first, to_channels_last
from components.train.scaling import ScheduledLossScaleOptimizer
from components.train.schedules import (
    WarmupCosine,
    WarmupPiecewise,
    refining_steps,
    scaled_learning_rate,
)
from components.train.trainer import TrainingModel, evaluation_model

COMPONENT = "train"
log = logging.getLogger(__name__)

# Settings that do not change what is trained: a resumed run may change them.
RESUMABLE_CHANGES = {
    "log_every",
    "checkpoint_every",
    "eval_every_epochs",
    "jit_compile",
    "max_skipped_steps",
}


@dataclass(frozen=True)
class TrainData:
    """What the loop needs from the input side.

    train(epoch, skip): the batches (images uint8 [B, S, S, 3], labels int [B]) of epoch
        `epoch` (0-based) from its batch `skip` on, in an order fixed by the epoch (a resumed
        run continues the epoch where the killed one stopped), at least as many as the epoch
        has left; in any form `model.fit` accepts (a tf.data.Dataset, a generator of arrays);
    validation(): one pass over (uint8 center crops [B, S, S, 3], labels [B]).
    """

    train: Callable[[int, int], Any]
    validation: Callable[[], Iterable]
    steps_per_epoch: int
    num_classes: int


def check_resumable(out: Path, config: TrainConfig) -> None:
    """A folder with checkpoints resumes only with the configuration that made them; any other
    change (batch size, epochs, learning rate...) would silently change the schedule."""
    saved_path = out / "config.json"
    if not checkpoints.steps(out / "checkpoints") or not saved_path.exists():
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


def build_schedule(config: TrainConfig, steps_per_epoch: int, total_steps: int):
    """Warmup (epochs or steps), then cosine from the linearly scaled peak or the original's
    steps."""
    if config.warmup_steps is not None:
        warmup = config.warmup_steps
    else:
        warmup = round(config.warmup_epochs * steps_per_epoch)
    warmup = min(warmup, total_steps - 1)
    if config.schedule == "step" and config.step_peak is not None:  # a warm start
        scratch = (config.step_from_epochs or config.epochs) * steps_per_epoch
        boundaries, values = refining_steps(
            config.step_boundaries, config.step_values, config.step_peak, scratch, total_steps
        )
        return WarmupPiecewise(boundaries, values, warmup)
    if config.schedule == "step":
        return WarmupPiecewise(list(config.step_boundaries), list(config.step_values), warmup)
    peak = scaled_learning_rate(config.base_lr, config.batch_size)
    return WarmupCosine(peak, total_steps, warmup)


def build_optimizer(config: TrainConfig, schedule, precision: str):
    """SGD with Nesterov momentum, with dynamic loss scaling for float16 (whose skipped steps
    still count as steps of the schedule: `scaling`).

    Weight decay is not the optimizer's (Keras' is decoupled, applied outside the momentum, which
    makes 1e-4 act about ten times weaker than in the paper): it is an L2 term in the loss,
    `tricks.weight_decay_loss`, as MXNet and the original's kernel regularizer apply it.
    """
    optimizer = keras.optimizers.SGD(
        learning_rate=schedule, momentum=config.momentum, nesterov=config.nesterov
    )
    if precision == "mixed_float16":
        optimizer = ScheduledLossScaleOptimizer(optimizer)
    return optimizer


def resolve_jit(config: TrainConfig, found: device_discovery.Devices) -> bool:
    """XLA on JAX always (its trainer is built on jit), on a TensorFlow GPU, never around
    tf.distribute (Keras' trainer refuses that pair)."""
    jit = config.jit_compile
    if keras.backend.backend() == "jax":
        return True if jit is None else jit
    if found.distributed:
        if jit:
            raise ValueError(
                "jit_compile=true cannot wrap tf.distribute training over "
                f"{found.replicas} devices; leave jit_compile unset"
            )
        return False
    return found.kind == "gpu" if jit is None else jit


def build_trainer(
    config: TrainConfig,
    num_classes: int,
    precision: str,
    teacher: keras.Model | None,
    found: device_discovery.Devices,
) -> TrainingModel:
    """The classifier in the chosen precision (logits stay float32) and the layout the devices
    run (`Devices.data_format`), wrapped for training."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        backbone = create_model(
            config.model,
            num_classes,
            width=config.width,
            input_size=config.image_size,
            data_format=found.data_format(config.data_format),
            zero_gamma=config.zero_gamma,
        )
    finally:
        keras.config.set_dtype_policy(previous)
    return TrainingModel(backbone, config, num_classes, teacher, found.replica_id)


def load_teacher(
    path: str, num_classes: int, image_size: int, data_format: str = "channels_last"
) -> keras.Model:
    """A saved Keras classifier to distill from; it must see the same images and classes. A
    channels_first teacher is rebuilt channels_last where the devices need that layout."""
    teacher = keras.saving.load_model(path, compile=False)
    if data_format == "channels_last" and is_channels_first(teacher):
        teacher = to_channels_last(teacher)
    shape = tuple(teacher.input_shape[1:])
    classes = teacher.output_shape[-1]
    if classes != num_classes or shape[:2] not in ((image_size, image_size), (None, None)):
        raise ValueError(
            f"teacher {path} takes {shape} images into {classes} classes; this training needs "
            f"({image_size}, {image_size}, 3) into {num_classes}"
        )
    return teacher


def start_from(backbone: keras.Model, path: str, num_classes: int, image_size: int) -> None:
    """Copies the weights of a saved classifier of the same architecture into `backbone` (a
    warm start), each by its path. Kernels have the same shapes in either data layout, so a
    model saved channels_last starts a channels_first training too."""
    saved = keras.saving.load_model(path, compile=False)
    classes, shape = saved.output_shape[-1], tuple(saved.input_shape[1:])
    if classes != num_classes or shape[:2] not in ((image_size, image_size), (None, None)):
        raise ValueError(
            f"init_weights {path} takes {shape} images into {classes} classes; this training "
            f"needs ({image_size}, {image_size}, 3) into {num_classes}"
        )
    try:
        copy_by_path(saved.weights, backbone.weights)
    except ValueError as err:
        raise ValueError(
            f"init_weights {path} is not this training's model: {err}; start from a version "
            "of the same model and width, or from scratch"
        ) from err


def copy_by_path(source: list, target: list) -> None:
    """Assigns each variable of `target` the value of the variable of `source` at the same
    path (layer/variable name), never by position: a BatchNorm's gamma, beta, mean and
    variance all have one shape, so a file whose variables come in another order would load
    wrong without a word. Any variable missing on either side, or of another shape, is named
    in the ValueError, before anything is assigned."""
    by_path = {v.path: v for v in source}
    own = {v.path: v for v in target}
    problems = [f"{p} is missing from it" for p in own if p not in by_path]
    problems += [f"it has {p}, which this model has not" for p in by_path if p not in own]
    problems += [
        f"{p} is {tuple(by_path[p].shape)} there, {tuple(v.shape)} here"
        for p, v in own.items()
        if p in by_path and tuple(by_path[p].shape) != tuple(v.shape)
    ]
    if len(by_path) != len(source) or len(own) != len(target):
        problems.append("two variables share a path")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ValueError("; ".join(problems[:3]) + more)
    for p, variable in own.items():
        variable.assign(by_path[p])


def state_groups(trainer: TrainingModel) -> dict[str, list]:
    """Everything a resumed run needs, in a fixed order: weights, optimizer, random state."""
    return {
        "model": list(trainer.backbone.weights),
        "optimizer": list(trainer.optimizer.variables),
        "random": [trainer.augment.seed_generator.state, trainer.mixup_seed.state],
    }


def evaluate(model: keras.Model, batches: Iterable, num_classes: int) -> dict:
    """Top-1 / top-5 accuracy of `model` (uint8 center crops -> logits) over (images, labels)."""
    k = min(5, num_classes)
    correct1 = correct5 = total = 0
    for images, labels in batches:
        logits = np.asarray(model.predict_on_batch(images), np.float32)  # (B, K)
        labels = np.asarray(labels).astype(np.int64)
        top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
        correct1 += int((top[:, 0] == labels).sum())
        correct5 += int((top == labels[:, None]).any(axis=1).sum())
        total += len(labels)
    if total == 0:
        raise ValueError("the validation set is empty")
    return {"top1": correct1 / total, "top5": correct5 / total, "count": total}


class Progress(keras.callbacks.Callback):
    """The original's log line every `log_every` steps, mid-epoch checkpoints, and the checks
    that stop a diverged run instead of letting it spin.

    Keras calls it once per call into the compiled step (`steps_per_execution` steps), which
    is what saves the round trips on TensorFlow: there callbacks always run on the main
    thread, which waits for the step's logs. It is async-safe, so on backends that allow it
    (JAX) Keras hands `on_train_batch_end`, which reads the loss, to a thread and goes straight
    on to the next call: that part touches no variable (the LR comes from the schedule and the
    step), and threads that finish out of order neither move the loss sum back nor write a log
    line behind a later one. What must see the model at rest runs in `on_train_batch_begin`, on
    the main thread between two calls: the checkpoint (after waiting for the loss of the steps
    it holds to be checked, so a diverged state is never saved) and float16's skipped-update
    check.
    """

    async_safe = True

    def __init__(
        self, config, steps_per_epoch, total_steps, schedule, save, log_file, on_event, scaled
    ):
        super().__init__()
        self.config, self.total_steps, self.schedule = config, total_steps, schedule
        self.steps_per_epoch = steps_per_epoch
        self.save, self.log_file, self.on_event, self.scaled = save, log_file, on_event, scaled
        self.first_step = 0  # global step before this fit() call
        self.skipped = self.checked_at = None  # float16: skipped updates at the last check
        # The log window (since the last line) may span fit() calls: Keras' running loss restarts
        # with each, so the window's sum is carried over, and so is the clock.
        self.window_start = self.clock = None
        self.carried = self.logged_sum = self.fit_sum = 0.0
        self.fit_batches = 0  # batches of this fit() call whose loss has been read
        self.checked = threading.Condition()
        self.failed: BaseException | None = None  # what a thread found (the loss not finite)

    def start(self, step: int) -> None:
        """Before each fit() call, which starts at global `step` (Keras has waited for every
        batch of the last one: epochs end by collecting the threads' work)."""
        if self.window_start is None:  # the run's (or the resumed run's) first call
            self.window_start, self.clock = step, time.perf_counter()
        else:
            self.carried += self.fit_sum - self.logged_sum
        self.first_step = step
        self.logged_sum = self.fit_sum = 0.0
        self.fit_batches = 0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        step = self.first_step + batch  # steps taken so far
        if step == self.first_step:
            return
        if self.scaled:
            self._check_skipped(step)
        if step % self.config.checkpoint_every == 0 and step % self.steps_per_epoch:
            self._wait_checked(batch)
            # On JAX, Keras keeps the state off the variables mid-epoch; asking for the model
            # puts it back (a no-op elsewhere), so the checkpoint holds this step's values.
            _ = self.model
            self.save(step)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = self.first_step + batch + 1
        try:
            # Keras' running mean over this fit() call, shape [1] (TrainingModel.get_metrics_result)
            mean_so_far = float(np.asarray(logs["loss"]).reshape(-1)[0])
            if not math.isfinite(mean_so_far):
                raise FloatingPointError(
                    f"the loss became {mean_so_far} at step {step}: lower base_lr "
                    f"({self.config.base_lr}) or lengthen the warmup; with float16, use "
                    "precision=mixed_bfloat16 or float32"
                )
        except BaseException as err:  # stops the checkpoint waiting for it, too
            with self.checked:
                self.failed = err
                self.checked.notify_all()
            raise
        with self.checked:
            if batch + 1 > self.fit_batches:  # threads may finish out of order
                self.fit_batches, self.fit_sum = batch + 1, mean_so_far * (batch + 1)
                self.checked.notify_all()
            due = step % self.config.log_every == 0 or step == self.total_steps
            if due and step > self.window_start:  # never behind a line already written
                self._log(step, mean_so_far * (batch + 1))

    def _wait_checked(self, batch: int) -> None:
        """Until the loss of this fit() call's first `batch` batches has been read and found
        finite (the threads run a call or two behind)."""
        with self.checked:
            done = self.checked.wait_for(lambda: self.fit_batches >= batch or self.failed, 600)
            if self.failed:
                raise self.failed
            if not done:
                raise RuntimeError(
                    f"the loss of the steps before the checkpoint at batch {batch} was not read "
                    "within 10 minutes: not saving a state that was never checked"
                )

    def _check_skipped(self, step: int) -> None:
        """float16 skips an update whose gradients overflow and halves the loss scale; a run
        where every update of `max_skipped_steps` steps was skipped has diverged."""
        if self.checked_at is not None and step - self.checked_at < self.config.max_skipped_steps:
            return
        skipped = int(keras.ops.convert_to_numpy(self.model.optimizer.skipped_steps))
        if self.skipped is not None and skipped - self.skipped >= step - self.checked_at:
            scale = float(keras.ops.convert_to_numpy(self.model.optimizer.dynamic_scale))
            raise FloatingPointError(
                f"float16: every update from step {self.checked_at} to {step} was skipped "
                f"(gradients not finite even at loss scale {scale:g}); use "
                "precision=mixed_bfloat16 or float32, or lower base_lr"
            )
        self.skipped, self.checked_at = skipped, step

    def _log(self, step: int, fit_sum: float) -> None:
        now = time.perf_counter()
        loss = (self.carried + fit_sum - self.logged_sum) / (step - self.window_start)
        # The schedule's step counts every batch (float16's skipped ones too): the LR of the
        # step just taken, from the schedule itself (no variable is read off the main thread).
        lr = float(keras.ops.convert_to_numpy(self.schedule(step - 1)))
        seconds = now - self.clock
        # The original's log line, word for word.
        line = f"Steps:{step}, LR:{lr:6.4f}, Loss:{loss:4.2f}, Time:{seconds:4.1f}s"
        self.log_file.write(line + "\n")
        self.log_file.flush()
        self.on_event(
            events.event(
                COMPONENT,
                "log",
                line,
                step=step,
                total_steps=self.total_steps,
                lr=lr,
                loss=loss,
                seconds=seconds,
                images_per_second=(step - self.window_start)
                * self.config.batch_size
                / max(seconds, 1e-9),
                line=line,
            )
        )
        self.window_start, self.clock = step, now
        self.carried, self.logged_sum = 0.0, fit_sum


def epoch_event(entry: dict, epochs: int) -> events.Event:
    """An epoch's end: INFO when it was evaluated, else DEBUG (a person follows the log lines)."""
    where = f"epoch {entry['epoch']}/{epochs} (step {entry['step']:,})"
    if "top1" in entry:
        message = f"{where}: val top-1 {entry['top1']:.4f}, top-5 {entry['top5']:.4f}"
        return events.event(COMPONENT, "epoch", message, **entry, epochs=epochs)
    return events.event(COMPONENT, "epoch", where, logging.DEBUG, **entry, epochs=epochs)


def whole_executions(config: TrainConfig, batches: int) -> tuple[int, int]:
    """(steps per epoch, total steps), both whole multiples of steps_per_execution: a call
    into the compiled step runs that many steps, so an epoch (or max_steps) that is not a
    multiple would run past its end; its last batches short of one are left out (a different
    few each epoch: each epoch has its own order)."""
    per_call = config.steps_per_execution
    steps_per_epoch = batches - batches % per_call
    if steps_per_epoch < 1:
        raise ValueError(
            f"an epoch has {batches} batches, fewer than steps_per_execution ({per_call}): "
            "lower it, or the batch size"
        )
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps:
        total_steps = min(
            total_steps, max(config.max_steps - config.max_steps % per_call, per_call)
        )
    return steps_per_epoch, total_steps


def fit_classifier(
    config: TrainConfig,
    data: TrainData,
    output_dir: str,
    on_event: events.OnEvent | None = None,
    found: device_discovery.Devices | None = None,
) -> dict:
    """Trains (or resumes) into `output_dir`: checkpoints, train.log, history.json, model.keras
    and summary.json. Returns the summary."""
    on_event = on_event or events.log_to(log)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_resumable(out, config)
    atomic.write_json(out / "config.json", json.loads(config.model_dump_json()))
    steps_per_epoch, total_steps = whole_executions(config, data.steps_per_epoch)
    epochs = math.ceil(total_steps / steps_per_epoch)

    # Devices and precision.
    found = found or device_discovery.detect()
    precision = tricks.resolve_precision(config.precision, found.capability)
    jit = resolve_jit(config, found)
    if config.batch_size % found.replicas:
        raise ValueError(
            f"batch_size {config.batch_size} is not divisible by {found.replicas} devices"
        )
    keras.utils.set_random_seed(config.seed)

    # Model and optimizer, created where the devices want their variables.
    data_format = found.data_format(config.data_format)
    with found.scope():
        teacher = (
            load_teacher(config.teacher, data.num_classes, config.image_size, data_format)
            if config.teacher
            else None
        )
        trainer = build_trainer(config, data.num_classes, precision, teacher, found)
        schedule = build_schedule(config, steps_per_epoch, total_steps)
        optimizer = build_optimizer(config, schedule, precision)
        trainer.compile(
            optimizer=optimizer, jit_compile=jit, steps_per_execution=config.steps_per_execution
        )
        optimizer.build(trainer.trainable_variables)
    evaluator = evaluation_model(trainer.backbone)  # one device: see `evaluate`

    # Restore.
    folder = out / "checkpoints"
    groups = state_groups(trainer)
    # Only the chief writes checkpoints, and only it reads them: in a cluster every worker
    # continues from the chief's state (a worker's own folder may hold anything).
    latest = checkpoints.latest(folder) if found.is_chief else None
    if latest is None and found.is_chief and config.init_weights:
        start_from(trainer.backbone, config.init_weights, data.num_classes, config.image_size)
        on_event(events.stage(COMPONENT, f"starting from the weights of {config.init_weights}"))
    start_step = checkpoints.restore(latest, groups)["step"] if latest else 0
    start_step = found.share_chief_state([v for g in groups.values() for v in g], start_step)

    def save(step: int) -> None:
        if found.is_chief:
            checkpoints.save(folder, step, state_groups(trainer), {"epoch": step / steps_per_epoch})

    layout_note = (
        f" ({config.data_format} is a GPU layout here; same weights)"
        if data_format != config.data_format
        else ""
    )
    on_event(
        events.event(
            COMPONENT,
            "start",
            f"training {config.model} to step {total_steps:,} from step {start_step:,} "
            f"({precision}, {found.replicas} {found.kind} device(s) on {found.workers} worker(s), "
            f"XLA {'on' if jit else 'off'}, {data_format}{layout_note}, "
            f"{keras.backend.backend()})",
            total_steps=total_steps,
            steps_per_epoch=steps_per_epoch,
            start_step=start_step,
            precision=precision,
            devices=found.replicas,
            workers=found.workers,
            chief=found.is_chief,
            device_kind=found.kind,
            jit_compile=jit,
            data_format=data_format,
            num_classes=data.num_classes,
            backend=keras.backend.backend(),
        )
    )
    history_path = out / "history.json"
    history = json.loads(history_path.read_text()) if history_path.exists() else []
    history = [h for h in history if h["step"] <= start_step]  # epochs redone after a kill
    step = start_step
    with (out / "train.log").open("a") as log_file:
        scaled = precision == "mixed_float16"
        progress = Progress(
            config, steps_per_epoch, total_steps, schedule, save, log_file, on_event, scaled
        )
        while step < total_steps:
            epoch = step // steps_per_epoch + 1
            end = min(epoch * steps_per_epoch, total_steps)
            mixup = config.mixup_alpha > 0 and epoch <= config.epochs - config.mixup_off_epochs
            trainer.mixup_on.assign(1.0 if mixup else 0.0)
            # The steps: one fit() per epoch (or what is left of it), each epoch in its own
            # order, continued where it stopped when the run resumes mid-epoch.
            progress.start(step)
            trainer.fit(
                data.train(epoch - 1, step - (epoch - 1) * steps_per_epoch),
                epochs=1,
                steps_per_epoch=end - step,
                callbacks=[progress],
                shuffle=False,  # the data is shuffled by its own pipeline
                verbose=0,
            )
            step = end
            save(step)
            # Evaluation.
            entry = {"epoch": epoch, "step": step, "lr": float(schedule(step - 1))}
            due = config.eval_every_epochs and epoch % config.eval_every_epochs == 0
            if due or step == total_steps:
                entry.update(evaluate(evaluator, data.validation(), data.num_classes))
            history.append(entry)
            if found.is_chief:
                atomic.write_json(history_path, history)
            on_event(epoch_event(entry, epochs))

    # Export: the classifier alone, in Keras' own format (the registry keeps it for teachers).
    model_file = out / "model.keras"
    if found.is_chief:
        trainer.backbone.save(model_file)
    final = history[-1] if history and "top1" in history[-1] else None
    if final is None:
        final = evaluate(evaluator, data.validation(), data.num_classes)
    summary = {
        "steps": step,
        "resumed_from": start_step,
        "precision": precision,
        "jit_compile": jit,
        "data_format": data_format,
        "devices": found.replicas,
        "workers": found.workers,
        "backend": keras.backend.backend(),
        "model_file": str(model_file),
        "num_classes": data.num_classes,
        "chief": found.is_chief,
        "history": history,
        "final": final,
    }
    if precision == "mixed_float16":  # updates whose float16 gradients overflowed
        summary["skipped_steps"] = int(keras.ops.convert_to_numpy(optimizer.skipped_steps))
    # Every worker of a cluster holds the whole state: its digest, per group, in each worker's
    # own folder, shows that they ended as one (same weights, momenta, step, random state).
    summary["state_digest"] = state_digest(trainer)
    atomic.write_json(out / "state.json", {"step": step, "state_digest": summary["state_digest"]})
    if found.is_chief:
        atomic.write_json(out / "summary.json", summary)
    return summary


def state_digest(trainer: TrainingModel) -> dict[str, str]:
    """SHA-256 of this worker's copy of the state, per group, in order: the trained weights,
    the optimizer (momenta, step), the random state, which every worker of a cluster holds
    alike; and BatchNorm's running statistics, which each replica gathers from its own part of
    the batch (as tf.distribute does without synchronized BatchNorm): the chief's are the ones
    checkpointed and exported."""
    groups = state_groups(trainer)
    groups = {
        "weights": list(trainer.backbone.trainable_weights),
        "statistics": list(trainer.backbone.non_trainable_weights),
        "optimizer": groups["optimizer"],
        "random": groups["random"],
    }
    digests = {}
    for name, variables in groups.items():
        digest = hashlib.sha256()
        for variable in variables:
            value = np.ascontiguousarray(keras.ops.convert_to_numpy(variable))
            digest.update(f"{value.dtype}{value.shape}".encode())
            digest.update(value.tobytes())
        digests[name] = digest.hexdigest()
    return digests
