"""Train-time augmentation that runs batched on the accelerator, inside the train step.

The CPU only decodes the crop window and resizes it to the training size as uint8 (see
`preprocessing`); everything else happens here, per example but on whole batches, in `keras.ops`
alone, so it runs unchanged on TensorFlow (the product) and JAX (the GPU check):

    uint8 [B, S, S, 3] --rotate_flip--> float32 --color (one 3x3 matrix + offset) + PCA--> clip
        --normalize--> float32 [B, S, S, 3], mean 0 / std 1 per channel

Distributions are the paper's and GluonCV's ImageNet recipe (with the original's ±7° rotation):
flip with p = 0.5; rotation uniform in ±max_degrees; brightness, contrast and saturation
coefficients uniform in [1 - s, 1 + s] (s = 0.4); hue optional (off; when on, turned by up to
hue·π); AlexNet PCA lighting with α ~ N(0, σ); each drawn per example.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

from components.train.randomness import ReplicaSeedGenerator, no_replica

MEAN_RGB = (123.68, 116.779, 103.939)  # the text's mean (the original code has 109.939 for blue)
STD_RGB = (58.393, 57.12, 57.375)
PCA_EIGVAL = (55.46, 4.794, 1.148)
PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
# YIQ: luma and two chroma axes; a hue change is a rotation in the chroma plane (as GluonCV).
RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.321), (0.211, -0.523, 0.311))
# Its exact inverse (the usual 3-decimal table is off by up to 0.5 of 255 on saturated colours,
# which would shift every colour a little even at hue 0).
YIQ_TO_RGB = tuple(map(tuple, np.linalg.inv(np.array(RGB_TO_YIQ)).tolist()))
LUMA = (0.299, 0.587, 0.114)


def normalize(images):
    """uint8 or float [..., 3] in 0..255 -> float32 (x - mean) / std per channel."""
    images = ops.cast(images, "float32")
    return (images - ops.array(MEAN_RGB, "float32")) / ops.array(STD_RGB, "float32")


def _reflect(coordinate, size: int):
    """Continuous pixel coordinates folded back into [0, size - 1] as a mirror would (d c b a |
    a b c d | d c b a), so rotated corners show the picture instead of black."""
    period = 2.0 * size
    folded = ops.mod(coordinate + 0.5, period)
    folded = ops.where(folded >= size, period - folded, folded) - 0.5
    return ops.clip(folded, 0.0, size - 1.0)


def rotate_flip(images, radians, mirror):
    """float32 [B, S, S, C] -> same: each image turned by radians[b] about its center, then
    mirrored left-right where mirror[b]; bilinear, borders reflected.

    A gather with explicit weights rather than a backend's image op, so that it compiles under
    XLA on every backend and runs batched with one angle per example.
    """
    batch, height, width, channels = ops.shape(images)
    ys, xs = ops.meshgrid(
        ops.arange(height, dtype="float32"), ops.arange(width, dtype="float32"), indexing="ij"
    )  # (S, S) each
    u = xs[None] - (width - 1) / 2.0  # (1, S, S), from the center
    v = ys[None] - (height - 1) / 2.0
    cos = ops.cos(radians)[:, None, None]  # (B, 1, 1)
    sin = ops.sin(radians)[:, None, None]
    sign = ops.where(mirror, -1.0, 1.0)[:, None, None]
    source_x = _reflect(sign * (cos * u - sin * v) + (width - 1) / 2.0, width)  # (B, S, S)
    source_y = _reflect(sin * u + cos * v + (height - 1) / 2.0, height)

    x0, y0 = ops.floor(source_x), ops.floor(source_y)
    wx, wy = (source_x - x0)[..., None], (source_y - y0)[..., None]  # (B, S, S, 1)
    x0 = ops.cast(x0, "int32")
    y0 = ops.cast(y0, "int32")
    x1 = ops.minimum(x0 + 1, width - 1)
    y1 = ops.minimum(y0 + 1, height - 1)
    flat = ops.reshape(images, (-1, channels))  # (B*S*S, C)
    base = (ops.arange(batch, dtype="int32") * (height * width))[:, None, None]

    def pixels(y, x):
        return ops.take(flat, base + y * width + x, axis=0)  # (B, S, S, C)

    top = pixels(y0, x0) * (1.0 - wx) + pixels(y0, x1) * wx
    bottom = pixels(y1, x0) * (1.0 - wx) + pixels(y1, x1) * wx
    return top * (1.0 - wy) + bottom * wy


def color_matrices(brightness, saturation, hue_radians):
    """[B] coefficients -> [B, 3, 3] matrices M with rgb_out = M @ rgb_in.

    Brightness scales, saturation blends each pixel with its gray (luma) value, hue rotates the
    chroma plane of YIQ; all three are linear, so one matrix applies them together, and they
    commute (hue up to about 1e-3): the order GluonCV draws at random would only matter through
    clipping between the steps, which this does once, at the end.
    """
    eye = ops.eye(3)[None]  # (1, 3, 3)
    gray = ops.ones((3, 1)) * ops.array([LUMA], "float32")  # each row: the luma weights
    s = saturation[:, None, None]
    sat = s * eye + (1.0 - s) * gray[None]  # (B, 3, 3)
    cos, sin = ops.cos(hue_radians), ops.sin(hue_radians)
    zero, one = ops.zeros_like(cos), ops.ones_like(cos)
    rotate = ops.stack(
        [ops.stack([one, zero, zero], -1), ops.stack([zero, cos, -sin], -1),
         ops.stack([zero, sin, cos], -1)], axis=1,
    )  # (B, 3, 3)  # fmt: skip
    to_rgb = ops.array(YIQ_TO_RGB, "float32")[None]
    to_yiq = ops.array(RGB_TO_YIQ, "float32")[None]
    hue = ops.matmul(ops.matmul(to_rgb, rotate), to_yiq)
    return brightness[:, None, None] * ops.matmul(sat, hue)


def color_jitter(images, brightness, contrast, saturation, hue_radians):
    """float32 [B, S, S, 3] in 0..255 and per-example coefficients [B] -> float32 [B, S, S, 3],
    not clipped: brightness, contrast, saturation and hue as GluonCV's and torchvision's colour
    jitter define them (contrast blends every pixel with the image's mean gray level).

    Contrast is affine, with an offset that depends on the image only through its mean colour,
    and the mean of a linearly transformed image is the transformed mean: so the whole jitter is
    one matrix and one offset per example. Brightness, contrast and saturation commute exactly;
    hue commutes with them up to the YIQ luma weights' rounding (about 1e-3).
    """
    matrices = color_matrices(brightness, saturation, hue_radians)  # (B, 3, 3)
    mean = ops.mean(images, axis=(1, 2))  # (B, 3)
    gray = ops.einsum("d,bdc,bc->b", ops.array(LUMA, "float32"), matrices, mean)  # (B,)
    c = contrast[:, None, None]
    out = ops.einsum("bhwc,bdc->bhwd", images, c * matrices)  # (B, S, S, 3)
    return out + ((1.0 - contrast) * gray)[:, None, None, None]


def pca_offsets(alpha):
    """[B, 3] noise α -> [B, 3] RGB offsets V · (α ⊙ λ) of AlexNet's PCA lighting."""
    eigvec = ops.array(PCA_EIGVEC, "float32")  # (3, 3), one eigenvector per column
    return ops.matmul(alpha * ops.array(PCA_EIGVAL, "float32"), ops.transpose(eigvec))


@keras.saving.register_keras_serializable("trickflow")
class DeviceAugment(keras.layers.Layer):
    """uint8 [B, S, S, 3] -> normalized float32 [B, S, S, 3]; random only when training.

    Without `training`, it only normalizes: the evaluation images come center-cropped from the CPU.
    Every example draws its own flip, angle, colour coefficients and lighting; under data
    parallelism each replica draws its own (`replica_id`, see `randomness`).
    """

    def __init__(
        self,
        flip: bool = True,
        rotation_degrees: float = 7.0,
        color_jitter: float = 0.4,
        hue: float = 0.0,
        pca_lighting: float = 0.1,
        seed: int | None = None,
        replica_id: Callable[[], Any] = no_replica,
        **kwargs,
    ):
        super().__init__(dtype="float32", **kwargs)  # pixel math stays float32 under any policy
        self.flip = flip
        self.rotation_degrees = rotation_degrees
        self.color_jitter = color_jitter
        self.hue = hue
        self.pca_lighting = pca_lighting
        self.seed = seed
        self.seed_generator = ReplicaSeedGenerator(seed, replica_id)
        self.built = True  # no weights to create

    def _uniform(self, batch: int, low: float, high: float):
        return keras.random.uniform((batch,), low, high, seed=self.seed_generator)

    def call(self, images, training: bool = False):
        images = ops.cast(images, "float32")  # (B, S, S, 3) in 0..255
        if not training:
            return normalize(images)
        batch = ops.shape(images)[0]
        limit = self.rotation_degrees * math.pi / 180
        if limit > 0 or self.flip:
            radians = self._uniform(batch, -limit, limit) if limit > 0 else ops.zeros((batch,))
            mirror = self._uniform(batch, 0.0, 1.0) < 0.5
            if not self.flip:
                mirror = ops.zeros((batch,), "bool")
            images = rotate_flip(images, radians, mirror)
        jitter, hue = self.color_jitter, self.hue
        if jitter > 0 or hue > 0:

            def coefficient():  # one of brightness, contrast, saturation: [B]
                if jitter > 0:
                    return self._uniform(batch, 1.0 - jitter, 1.0 + jitter)
                return ops.ones((batch,))

            brightness, contrast, saturation = coefficient(), coefficient(), coefficient()
            radians = self._uniform(batch, -hue, hue) * math.pi if hue > 0 else ops.zeros((batch,))
            images = color_jitter(images, brightness, contrast, saturation, radians)
        if self.pca_lighting > 0:
            alpha = keras.random.normal(
                (batch, 3), stddev=self.pca_lighting, seed=self.seed_generator
            )
            images = images + pca_offsets(alpha)[:, None, None, :]  # (B, 1, 1, 3)
        if jitter > 0 or hue > 0 or self.pca_lighting > 0:
            images = ops.clip(images, 0.0, 255.0)
        return normalize(images)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "flip": self.flip,
            "rotation_degrees": self.rotation_degrees,
            "color_jitter": self.color_jitter,
            "hue": self.hue,
            "pca_lighting": self.pca_lighting,
            "seed": self.seed,
        }


def mixup_images(images, lam):
    """Blends each example with its mirror in the batch (example b with B-1-b), as GluonCV does:
    float [B, ...] -> the same, weight lam (a scalar) on the example itself. The batch is
    already shuffled, so the partner is random."""
    return lam * images + (1.0 - lam) * ops.flip(images, axis=0)


def mixup_targets(targets, lam):
    """Target distributions [B, K] mixed with the same partners and weight: still sum to 1."""
    return lam * targets + (1.0 - lam) * ops.flip(targets, axis=0)
