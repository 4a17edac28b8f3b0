"""Random draws inside the compiled train step: per-replica streams, and Beta without Gamma.

    ReplicaSeedGenerator(seed, replica_id)  # a keras SeedGenerator whose draws differ per replica
    beta(alpha, seed) -> float32 []         # one Beta(α, α) draw that XLA compiles

Two things the stock Keras pieces get wrong for data-parallel, compiled training:

- A `keras.random.SeedGenerator` holds one state variable, and under tf.distribute every replica
  holds a copy of it with the same value: N GPUs would draw N identical sets of flips, angles,
  colour coefficients and lighting, so a step of global batch B had only B/N independent draws.
  `ReplicaSeedGenerator` keeps the one shared state (checkpointed as before, identical on every
  replica) and folds the replica's index into each seed it hands out.
- `keras.random.beta` is built on Gamma sampling, which on TensorFlow is an op without an XLA
  kernel (`StatelessRandomGammaV3`): mixup would fail to compile on a single TensorFlow GPU,
  where XLA is on by default. `beta` draws from normal and uniform variates only, which every
  backend compiles.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
from keras import ops
from keras.src.utils.naming import auto_name  # Keras' own unique layer/generator names

# Replica r draws from seed (s + r·STRIDE, n): far from the small seeds the training's other
# generators start from (config.seed, config.seed + 1), so no two streams coincide.
REPLICA_STRIDE = 1_000_003
CANDIDATES = 12  # Marsaglia–Tsang proposals per Gamma draw; see `beta`


def no_replica() -> int:
    return 0


class ReplicaSeedGenerator(keras.random.SeedGenerator):
    """A SeedGenerator whose seeds differ per replica: `next()` adds `replica_id()` · STRIDE to
    the first seed component. `replica_id` returns the replica's index in the synchronized
    group (0 outside data parallelism), a Python int or a scalar tensor."""

    def __init__(
        self,
        seed: int | None = None,
        replica_id: Callable[[], Any] = no_replica,
        name: str | None = None,
    ):
        # Named as a plain SeedGenerator, so that checkpoints keep their variable paths.
        super().__init__(seed, name=name or auto_name("SeedGenerator"))
        self.replica_id = replica_id

    def next(self, ordered: bool = True):
        seed = super().next(ordered)  # (2,), the shared state before this draw
        replica = ops.cast(self.replica_id(), seed.dtype)
        offset = ops.stack([replica * REPLICA_STRIDE, ops.zeros_like(replica)])
        return seed + offset


def log_gamma_variates(shape: tuple[int, ...], alpha: float, seed) -> Any:
    """log of Gamma(α, 1) variates, float32 `shape`, from normals and uniforms alone.

    Marsaglia and Tsang's method for shape a = α + 1 ≥ 1 (d = a - 1/3, c = 1/√(9d): propose
    v = (1 + c·x)³ with x ~ N(0, 1), accept when log u < x²/2 + d - d·v + d·log v), then the
    boost Gamma(α) = Gamma(α + 1) · U^(1/α) for α < 1, taken in logs so that a tiny α cannot
    underflow. The rejection loop becomes CANDIDATES proposals drawn at once and the first
    accepted one kept: at a ≥ 1 each is accepted with probability above 0.95, so all twelve
    fail less than once in 10¹⁵ draws (then the last proposal is kept).

    `seed` must be a SeedGenerator: the three draws need three different seeds.
    """
    if not isinstance(seed, keras.random.SeedGenerator):
        raise ValueError(f"seed must be a keras.random.SeedGenerator, got {seed!r}")
    a = alpha + 1.0 if alpha < 1.0 else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    x = keras.random.normal((*shape, CANDIDATES), seed=seed)
    u = keras.random.uniform((*shape, CANDIDATES), seed=seed)
    v = ops.power(1.0 + c * x, 3.0)
    positive = v > 0
    log_v = ops.log(ops.where(positive, v, 1.0))
    accepted = positive & (ops.log(u) < 0.5 * ops.square(x) + d - d * v + d * log_v)
    # The first accepted proposal (argmax finds the first True); the last one counts as
    # accepted, so it is kept when none before it was.
    accepted = ops.concatenate([accepted[..., :-1], ops.ones_like(accepted[..., -1:])], axis=-1)
    first = ops.argmax(ops.cast(accepted, "int32"), axis=-1)  # shape
    chosen = ops.take_along_axis(log_v, ops.expand_dims(first, -1), axis=-1)[..., 0]
    log_gamma = math.log(d) + chosen
    if alpha < 1.0:
        boost = keras.random.uniform(shape, minval=1e-30, maxval=1.0, seed=seed)
        log_gamma = log_gamma + ops.log(boost) / alpha
    return log_gamma


def beta_log_odds(alpha: float, seed) -> Any:
    """log(B / (1 - B)) of one B ~ Beta(α, α), float32 scalar: log X - log Y for X, Y ~ Gamma(α).
    Exact in the tails, where B itself rounds to 0 or 1 in float32."""
    logs = log_gamma_variates((2,), alpha, seed)
    return logs[0] - logs[1]


def beta(alpha: float, seed) -> Any:
    """One Beta(α, α) draw, float32 scalar in [0, 1]: X / (X + Y) for X, Y ~ Gamma(α), computed
    as sigmoid(log X - log Y) so that it stays finite when both are tiny (α = 0.2 puts most of
    the mass near 0 and 1; within 6e-8 of either end it rounds to it)."""
    return ops.sigmoid(beta_log_odds(alpha, seed))
