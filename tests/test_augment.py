"""The device side of augmentation (keras.ops), its distributions, mixup, and the training model's
loss; run here on the TensorFlow backend, eagerly and compiled with XLA. The same code runs on JAX
in `make gpu-check-cpu`."""

from __future__ import annotations

import ast
import importlib.util
import itertools
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from components.train import augment as aug
from components.train.config import AugmentConfig, TrainConfig
from components.train.models import create_model
from components.train.trainer import TrainingModel
from tests.conftest import pattern_image

PHOTO = pattern_image(2, 0, (48, 48))  # (48, 48, 3) uint8 with structure in both axes


def batch_of(image: np.ndarray, n: int) -> np.ndarray:
    return np.repeat(image[None], n, axis=0)


def test_normalize_uses_the_papers_mean_and_std() -> None:
    out = np.asarray(aug.normalize(np.zeros((1, 1, 3), np.uint8))).ravel()
    np.testing.assert_allclose(out, [-123.68 / 58.393, -116.779 / 57.12, -103.939 / 57.375], 1e-6)


def test_rotate_flip_identity_and_mirror_are_exact() -> None:
    images = batch_of(PHOTO, 2).astype(np.float32)
    same = np.asarray(aug.rotate_flip(images, np.zeros(2, np.float32), np.array([False, True])))
    np.testing.assert_allclose(same[0], PHOTO, atol=1e-4)
    np.testing.assert_allclose(same[1], PHOTO[:, ::-1], atol=1e-4)


def test_rotation_matches_tensorflows_image_transform() -> None:
    """A reference with another implementation: TF's projective transform, bilinear, reflected."""
    angle = np.float32(np.deg2rad(7.0))
    ours = np.asarray(aug.rotate_flip(PHOTO[None].astype(np.float32), np.array([angle]), [False]))
    size, c = 48, 23.5
    cos, sin = np.cos(angle), np.sin(angle)
    transform = [cos, -sin, c - cos * c + sin * c, sin, cos, c - sin * c - cos * c, 0.0, 0.0]
    theirs = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.constant(PHOTO[None], tf.float32),
        transforms=tf.constant([transform], tf.float32),
        output_shape=[size, size],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    ).numpy()
    inner = np.s_[:, 4:-4, 4:-4]  # corners differ only in how each reflects
    assert np.abs(ours[inner] - theirs[inner]).mean() < 0.5
    assert np.abs(ours[inner] - PHOTO[None, 4:-4, 4:-4]).mean() > 5  # it did turn


def test_color_matrix_identity_gray_and_luma() -> None:
    def matrix(brightness, saturation, hue):
        return np.asarray(
            aug.color_matrices(
                np.array([brightness], np.float32),
                np.array([saturation], np.float32),
                np.array([hue], np.float32),
            )
        )[0]

    identity = matrix(1.0, 1.0, 0.0)
    np.testing.assert_allclose(identity, np.eye(3), atol=2e-3)
    rgb = np.array([200.0, 50.0, 10.0])
    assert np.ptp(matrix(1.0, 0.0, 0.0) @ rgb) < 1e-3  # saturation 0: gray
    hue = matrix(1.0, 1.0, 1.0)
    assert np.dot(aug.LUMA, hue @ rgb) == pytest.approx(np.dot(aug.LUMA, rgb), rel=1e-2)
    np.testing.assert_allclose(matrix(1.2, 1.0, 0.0), 1.2 * identity, rtol=1e-6)


def _reference_jitter(image: np.ndarray, coefficients: dict, order: tuple[str, ...]) -> np.ndarray:
    """An independent reference: torchvision's / GluonCV's colour jitter, one step at a time in
    the given order, in float64 (hue through the exact inverse of the YIQ matrix)."""
    luma = np.array(aug.LUMA)
    to_yiq = np.array(aug.RGB_TO_YIQ)
    x = image.astype(np.float64)
    for op in order:
        factor = coefficients[op]
        if op == "brightness":
            x = factor * x
        elif op == "contrast":  # blend with the mean gray level of the whole image
            x = factor * x + (1 - factor) * (x @ luma).mean()
        elif op == "saturation":  # blend each pixel with its own gray level
            x = factor * x + (1 - factor) * (x @ luma)[..., None]
        elif op == "hue":  # rotate the chroma plane by factor · π
            yiq = x @ to_yiq.T
            angle = factor * np.pi
            i, q = yiq[..., 1].copy(), yiq[..., 2].copy()
            yiq[..., 1] = np.cos(angle) * i - np.sin(angle) * q
            yiq[..., 2] = np.sin(angle) * i + np.cos(angle) * q
            x = yiq @ np.linalg.inv(to_yiq).T
    return x


PHOTO_F = PHOTO.astype(np.float32)[None]  # (1, 48, 48, 3)


@pytest.mark.parametrize(
    "order", list(itertools.permutations(("brightness", "contrast", "saturation")))
)
def test_color_jitter_matches_the_reference_in_every_order(order) -> None:
    """Brightness, contrast and saturation commute (before any clipping): one matrix and one
    offset per example reproduce the sequential reference whichever order it takes."""
    coefficients = {"brightness": 1.3, "contrast": 0.7, "saturation": 1.35}
    ours = np.asarray(
        aug.color_jitter(
            PHOTO_F,
            np.array([1.3], np.float32),
            np.array([0.7], np.float32),
            np.array([1.35], np.float32),
            np.zeros(1, np.float32),
        )
    )[0]
    np.testing.assert_allclose(ours, _reference_jitter(PHOTO, coefficients, order), atol=0.02)


@pytest.mark.parametrize(
    "order", [("hue", "saturation", "contrast"), ("contrast", "saturation", "hue")]
)
def test_hue_matches_the_reference_in_either_place(order) -> None:
    coefficients = {"hue": 0.15, "saturation": 0.8, "contrast": 1.2}
    ours = np.asarray(
        aug.color_jitter(
            PHOTO_F,
            np.ones(1, np.float32),
            np.array([1.2], np.float32),
            np.array([0.8], np.float32),
            np.array([0.15 * np.pi], np.float32),
        )
    )[0]
    reference = _reference_jitter(PHOTO, coefficients, order)
    np.testing.assert_allclose(ours, reference, atol=0.05)
    assert np.abs(ours - PHOTO).mean() > 5  # it did change the colours


def _augmented(images: np.ndarray, compiled: bool = False, **settings) -> np.ndarray:
    layer = aug.DeviceAugment(**settings, seed=1)
    if compiled:
        run = tf.function(lambda x: layer(x, training=True), jit_compile=True)
        return np.asarray(run(tf.constant(images)))
    return np.asarray(layer(images, training=True))


def _pixels(normalized: np.ndarray) -> np.ndarray:
    return normalized * np.array(aug.STD_RGB) + np.array(aug.MEAN_RGB)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "xla"])
def test_flip_happens_half_the_time(compiled: bool) -> None:
    out = _pixels(
        _augmented(
            batch_of(PHOTO, 400),
            compiled,
            rotation_degrees=0,
            color_jitter=0,
            pca_lighting=0,
        )
    )
    mirrored = np.abs(out - PHOTO[:, ::-1]).max(axis=(1, 2, 3)) < 0.01
    unchanged = np.abs(out - PHOTO).max(axis=(1, 2, 3)) < 0.01
    assert (mirrored | unchanged).all()
    assert 0.4 < mirrored.mean() < 0.6


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "xla"])
def test_brightness_is_multiplicative_in_the_papers_range(compiled: bool) -> None:
    """On gray pixels saturation and hue change nothing: out / in is the brightness factor."""
    gray = np.full((2000, 2, 2, 3), 100, np.uint8)
    out = _pixels(_augmented(gray, compiled, flip=False, rotation_degrees=0, pca_lighting=0))
    factor = out[:, 0, 0, 0] / 100.0
    assert factor.min() >= 0.6 - 4e-3 and factor.max() <= 1.4 + 4e-3  # YIQ rounding
    assert factor.mean() == pytest.approx(1.0, abs=0.03)
    assert factor.std() == pytest.approx(0.8 / np.sqrt(12), rel=0.1)  # uniform on [0.6, 1.4]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "xla"])
def test_contrast_is_drawn_in_the_recipes_range(compiled: bool) -> None:
    """Half 80, half 160 gray: brightness b moves the mean to 120·b, contrast c scales the gap
    between the halves to 80·b·c (saturation changes nothing on gray; nothing clips)."""
    image = np.full((2000, 2, 2, 3), 80, np.uint8)
    image[:, :, 1] = 160
    out = _pixels(_augmented(image, compiled, flip=False, rotation_degrees=0, pca_lighting=0))
    brightness = out[:, :, :, 0].mean(axis=(1, 2)) / 120.0
    contrast = (out[:, 0, 1, 0] - out[:, 0, 0, 0]) / (80.0 * brightness)
    assert contrast.min() >= 0.6 - 4e-3 and contrast.max() <= 1.4 + 4e-3
    assert contrast.std() == pytest.approx(0.8 / np.sqrt(12), rel=0.1)  # uniform on [0.6, 1.4]
    assert abs(np.corrcoef(brightness, contrast)[0, 1]) < 0.1  # drawn independently


def _hue_angles(pixels: np.ndarray) -> np.ndarray:
    yiq = pixels @ np.array(aug.RGB_TO_YIQ).T
    return np.arctan2(yiq[..., 2], yiq[..., 1])


def test_hue_is_off_by_default_and_turns_when_asked() -> None:
    """GluonCV's ImageNet recipe jitters no hue: brightness, contrast and saturation keep every
    pixel's hue angle. With hue = 0.1 the angle turns by up to 0.1·π."""
    assert AugmentConfig().hue == 0 and AugmentConfig().color_jitter == 0.4
    colour = np.zeros((1000, 1, 1, 3), np.uint8)
    colour[...] = (180, 90, 40)  # an orange: away from gray and from the clipping bounds
    settings = dict(flip=False, rotation_degrees=0, pca_lighting=0, color_jitter=0.2)
    plain = _pixels(_augmented(colour, **settings))[:, 0, 0]
    before = _hue_angles(colour[:, 0, 0].astype(np.float64))
    np.testing.assert_allclose(_hue_angles(plain), before, atol=2e-3)
    turned = _pixels(_augmented(colour, hue=0.1, **settings))[:, 0, 0]
    change = np.angle(np.exp(1j * (_hue_angles(turned) - before)))
    assert np.abs(change).max() <= 0.1 * np.pi + 0.01 and np.abs(change).max() > 0.08 * np.pi


def test_pca_lighting_has_alexnets_covariance() -> None:
    gray = np.full((4000, 1, 1, 3), 128, np.uint8)
    out = _pixels(_augmented(gray, flip=False, rotation_degrees=0, color_jitter=0))[:, 0, 0]
    vectors, values = np.array(aug.PCA_EIGVEC), np.array(aug.PCA_EIGVAL)
    expected = vectors @ np.diag((0.1 * values) ** 2) @ vectors.T
    np.testing.assert_allclose(np.cov(out - 128, rowvar=False), expected, atol=2.0, rtol=0.15)


def test_rotation_stays_within_seven_degrees() -> None:
    """Each output matches the photo turned by some angle in ±7° (found on a 0.5° grid)."""
    outputs = _pixels(_augmented(batch_of(PHOTO, 100), flip=False, color_jitter=0, pca_lighting=0))
    grid = np.deg2rad(np.arange(-10, 10.01, 0.5)).astype(np.float32)
    turned = np.asarray(
        aug.rotate_flip(batch_of(PHOTO, len(grid)).astype(np.float32), grid, [False] * len(grid))
    )  # (G, 48, 48, 3)
    errors = np.abs(outputs[:, None] - turned[None]).mean(axis=(2, 3, 4))  # (100, G)
    best = np.degrees(grid[errors.argmin(axis=1)])
    assert np.abs(best).max() <= 7.0 and np.abs(best).max() >= 5.5
    assert abs(best.mean()) < 1.5


def test_evaluation_only_normalizes() -> None:
    layer = aug.DeviceAugment(seed=0)
    out = np.asarray(layer(PHOTO[None], training=False))
    np.testing.assert_allclose(out, np.asarray(aug.normalize(PHOTO[None])), atol=1e-6)


def test_mixup_blends_images_and_targets_alike() -> None:
    images = np.stack([np.zeros((2, 2, 3)), np.ones((2, 2, 3))]).astype(np.float32)
    targets = np.eye(2, dtype=np.float32)
    mixed_images = aug.mixup_images(images, 0.7)
    mixed_targets = aug.mixup_targets(targets, 0.7)
    np.testing.assert_allclose(np.asarray(mixed_images)[0], 0.3)
    np.testing.assert_allclose(np.asarray(mixed_targets), [[0.7, 0.3], [0.3, 0.7]], atol=1e-6)


def _training_model(teacher=None, **fields) -> TrainingModel:
    config = TrainConfig(
        model="darknet53-tiny", image_size=32, augment=AugmentConfig(flip=False), **fields
    )
    backbone = create_model("darknet53-tiny", 4, input_size=32)
    return TrainingModel(backbone, config, 4, teacher)


IMAGES = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype(np.uint8)
LABELS = np.arange(8, dtype=np.int32) % 4


def test_mixed_targets_are_distributions_and_mixup_switches_off() -> None:
    model = _training_model(mixup_alpha=0.2)
    off = model(IMAGES, training=True)["mix"]
    plain = np.asarray(model.targets(LABELS, off))
    model.mixup_on.assign(1.0)
    lam = float(model(IMAGES, training=True)["mix"])
    mixed = np.asarray(model.targets(LABELS, lam))
    assert float(off) == 1.0 and 0.0 < lam < 1.0
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0, rtol=1e-6)
    assert not np.allclose(mixed, plain)  # labels really mixed
    np.testing.assert_allclose(plain.max(axis=1), 0.9, rtol=1e-6)  # smoothing alone


def test_the_teachers_logits_reach_the_loss() -> None:
    def loss_with(teacher_bias: float) -> float:
        teacher = create_model("darknet53-tiny", 4, input_size=32)
        teacher.get_layer("logits_conv").bias.assign(np.array([teacher_bias, 0, 0, 0]))
        model = _training_model(teacher=teacher, distill_temperature=2.0)
        outputs = model(IMAGES, training=False)
        assert "teacher_logits" in outputs
        return float(model.compute_loss(y=LABELS, y_pred=outputs, training=False))

    assert loss_with(0.0) != pytest.approx(loss_with(5.0), rel=1e-3)


def test_weight_decay_is_in_the_training_loss_only() -> None:
    model = _training_model(weight_decay=0.1)
    outputs = model(IMAGES, training=False)
    train = float(model.compute_loss(y=LABELS, y_pred=outputs, training=True))
    evaluation = float(model.compute_loss(y=LABELS, y_pred=outputs, training=False))
    kernels = sum(0.05 * float(np.sum(np.square(v.numpy()))) for v in model.decayed)
    assert train - evaluation == pytest.approx(kernels, rel=1e-4)


ACCELERATOR_MODULES = (
    "components.train.loop",
    "components.train.trainer",
    "components.train.augment",
    "components.train.tricks",
    "components.train.schedules",
    "components.train.devices",
    "components.train.checkpoints",
    "components.train.config",
    "components.train.models",
)


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # `package.module.function`
        return False


def _imports(module: str) -> set[str]:
    """Modules imported at the top level of `module` (function-level imports are the
    backend-specific discovery in devices.py, taken only on that backend)."""
    path = Path(importlib.util.find_spec(module).origin)
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_the_accelerator_code_never_imports_tensorflow() -> None:
    """Following every project import from the modules the GPU check runs: no TensorFlow.
    (`make gpu-check-cpu` runs them where TensorFlow is not installed at all.)"""
    seen, todo = set(), list(ACCELERATOR_MODULES)
    while todo:
        module = todo.pop()
        if module in seen or not _is_module(module):
            continue
        seen.add(module)
        for name in _imports(module):
            assert not name.split(".")[0].startswith("tensorflow"), f"{module} imports {name}"
            if name.startswith("components.") and _is_module(name):
                todo.append(name)
    assert "components.train.models.resnet" in seen


def test_keras_runs_on_the_tensorflow_backend_here() -> None:
    assert keras.backend.backend() == "tensorflow"
