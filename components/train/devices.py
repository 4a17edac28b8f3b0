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


@dataclass(frozen=True)
class Devices:
    """kind: 'gpu' or 'cpu'; capability: the GPUs' lowest compute capability (None on CPUs);
    replicas: devices that each take a slice of the batch; scope: the context to create
    variables in; workers/is_chief: the multi-machine layout (one worker otherwise)."""

    kind: str
    capability: float | None = None
    replicas: int = 1
    scope: Callable[[], Any] = contextlib.nullcontext
    distributed: bool = False
    workers: int = 1
    is_chief: bool = True
    names: tuple[str, ...] = field(default_factory=tuple)


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
        return Devices("cpu", names=(jax.devices()[0].device_kind,))
    capability = min(_capability(getattr(d, "compute_capability", "0")) for d in gpus)
    # One device: Keras' JAX data parallelism (keras.distribution) is not wired in here.
    return Devices("gpu", capability, names=tuple(d.device_kind for d in gpus[:1]))


def tf_config_workers() -> int:
    """Workers named in TF_CONFIG (chief included); 1 without it."""
    spec = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    return len(spec.get("worker", [])) + len(spec.get("chief", [])) or 1


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
            is_chief=chief,
            names=tuple(g.name for g in gpus),
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
        )
    return Devices(kind, capability if gpus else None, names=tuple(g.name for g in gpus))
