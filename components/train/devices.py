"""Where training runs: the accelerators of this machine (or cluster) and how to spread over them.

The loop asks only for a `Devices`; how it is found depends on the Keras backend, so each
backend's discovery imports its framework inside its own function. On TensorFlow (the product)
several GPUs of a machine train under `MirroredStrategy` and several machines under
`MultiWorkerMirroredStrategy`, configured by `TF_CONFIG` as tf.distribute defines it; on JAX (the
GPU check) one device trains.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras

from components.train.randomness import no_replica


def nothing_to_share(variables: list, step: int) -> int:
    return step


@dataclass(frozen=True)
class Devices:
    """kind: 'gpu' or 'cpu'; capability: the GPUs' lowest compute capability (None on CPUs);
    replicas: devices that each take a slice of the batch; scope: the context to create
    variables in; workers/worker/is_chief: the multi-machine layout (one worker otherwise);
    replica_id(): inside the train step, the index of the replica running it (0..replicas-1);
    share_chief_state(variables, step) -> step: every worker takes the chief's values of
    `variables` and its step (a resumed cluster restores one state everywhere)."""

    kind: str
    capability: float | None = None
    replicas: int = 1
    scope: Callable[[], Any] = contextlib.nullcontext
    distributed: bool = False
    workers: int = 1
    worker: int = 0
    is_chief: bool = True
    names: tuple[str, ...] = field(default_factory=tuple)
    replica_id: Callable[[], Any] = no_replica
    share_chief_state: Callable[[list, int], int] = nothing_to_share
    backend: str = "tensorflow"

    def data_format(self, requested: str) -> str:
        """The layout the model is built in: channels_first is a GPU layout, and TensorFlow's
        CPU convolutions take channels_last only (unless oneDNN is on, which it is only on
        some CPUs). Both layouts have the same weights, so on a TensorFlow CPU the same model
        trains channels_last, and checkpoints move between the two."""
        if requested == "channels_first" and self.kind == "cpu" and self.backend == "tensorflow":
            return "channels_last"
        return requested


def detect() -> Devices:
    """The devices of the current Keras backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow_devices()
    if backend == "jax":
        return _jax_devices()
    raise ValueError(f"training supports the tensorflow and jax backends, not {backend!r}")


def _capability(text: str | tuple | None) -> float | None:
    if text is None:
        return None
    if isinstance(text, tuple):
        return float(f"{text[0]}.{text[1]}")
    return float(text)


def _jax_devices() -> Devices:
    import jax

    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if not gpus:
        return Devices("cpu", names=(jax.devices()[0].device_kind,), backend="jax")
    capability = min(_capability(getattr(d, "compute_capability", "0")) for d in gpus)
    # One device: Keras' JAX data parallelism (keras.distribution) is not wired in here.
    return Devices("gpu", capability, names=tuple(d.device_kind for d in gpus[:1]), backend="jax")


def tf_config_workers() -> int:
    """Workers named in TF_CONFIG (chief included); 1 without it."""
    spec = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    return len(spec.get("worker", [])) + len(spec.get("chief", [])) or 1


def _tf_replica_id():
    """The replica's index in the synchronized group, inside `strategy.run` (the train step):
    a tensor under tf.distribute, 0 elsewhere. Global across the workers of a cluster."""
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    return 0 if context is None else context.replica_id_in_sync_group


def _tf_chief_state(strategy) -> Callable[[list, int], int]:
    """share_chief_state for a tf.distribute strategy: one all-reduce in which only replica 0
    (the chief's first device) contributes its values, so every worker receives them.

    Everything travels as float64 (the collective packs its inputs into one tensor of one
    type): exact for float32 values and for integers below 2**53 (step counters, random
    states); the sum of one value and zeros is that value, bit for bit.
    """
    import tensorflow as tf

    @tf.function
    def from_replica_0(values):
        context = tf.distribute.get_replica_context()
        first = tf.equal(context.replica_id_in_sync_group, 0)
        kept = [tf.where(first, v, tf.zeros_like(v)) for v in values]
        return context.all_reduce(tf.distribute.ReduceOp.SUM, kept)

    def share(variables: list, step: int) -> int:
        values = [tf.cast(tf.convert_to_tensor(v.value), tf.float64) for v in variables]
        values.append(tf.constant(step, tf.float64))
        shared = strategy.experimental_local_results(strategy.run(from_replica_0, (values,)))[0]
        for variable, value in zip(variables, shared[:-1], strict=True):
            if not tf.as_dtype(variable.dtype).is_floating:
                value = tf.round(value)
            variable.assign(tf.cast(value, variable.dtype))
        return int(shared[-1].numpy())

    return share


def _worker_index(resolver) -> int:
    """0 for the chief, then the workers in order: the position of this task's input shard."""
    spec = resolver.cluster_spec().as_dict()
    if resolver.task_type == "chief":
        return 0
    return int(resolver.task_id) + (1 if "chief" in spec else 0)


def _tensorflow_devices() -> Devices:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    capabilities = [
        _capability(tf.config.experimental.get_device_details(g).get("compute_capability"))
        for g in gpus
    ]
    capability = min((c for c in capabilities if c is not None), default=None)
    kind = "gpu" if gpus else "cpu"
    workers = tf_config_workers()
    if workers > 1:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        resolver = strategy.cluster_resolver
        chief = resolver.task_type == "chief" or (
            resolver.task_type == "worker"
            and resolver.task_id == 0
            and "chief" not in resolver.cluster_spec().as_dict()
        )
        return Devices(
            kind,
            capability if gpus else None,
            strategy.num_replicas_in_sync,
            strategy.scope,
            distributed=True,
            workers=workers,
            worker=_worker_index(resolver),
            is_chief=chief,
            names=tuple(g.name for g in gpus),
            replica_id=_tf_replica_id,
            share_chief_state=_tf_chief_state(strategy),
        )
    if len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
        return Devices(
            kind,
            capability,
            strategy.num_replicas_in_sync,
            strategy.scope,
            distributed=True,
            names=tuple(g.name for g in gpus),
            replica_id=_tf_replica_id,
        )
    return Devices(kind, capability if gpus else None, names=tuple(g.name for g in gpus))
