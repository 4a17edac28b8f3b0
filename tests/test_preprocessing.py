"""Every transform eagerly and inside Dataset.map ("you'd be surprised how much these differ")."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from components.train import preprocessing as pp
from components.train.config import AugmentConfig
from components.train.data import eval_transform, train_transform
from tests.conftest import jpeg_bytes, pattern_image

JPEG = jpeg_bytes(pattern_image(1, 0, (60, 80)))


def features(boxes: list[list[float]] | None = None) -> dict:
    boxes = boxes or []
    return {
        "image": tf.constant(JPEG),
        "label": tf.constant(1, tf.int64),
        "bbox_xmin": tf.constant([b[0] for b in boxes], tf.float32),
        "bbox_ymin": tf.constant([b[1] for b in boxes], tf.float32),
        "bbox_xmax": tf.constant([b[2] for b in boxes], tf.float32),
        "bbox_ymax": tf.constant([b[3] for b in boxes], tf.float32),
    }


def decoded(dtype=tf.float32) -> dict:
    return {**features(), "image": tf.cast(tf.io.decode_jpeg(JPEG, channels=3), dtype)}


def both_ways(fn, inputs: dict) -> tuple[dict, dict]:
    """(eager output, Dataset.map output) of fn on the same inputs."""
    eager = fn(inputs)
    mapped = next(iter(tf.data.Dataset.from_tensors(inputs).map(fn)))
    return eager, mapped


OPS = {
    "decode_random_crop": (
        lambda f: {**f, "image": tf.image.resize(pp.decode_random_crop(f)["image"], [32, 32])},
        features,
        (32, 32, 3),
    ),
    "decode_random_crop_boxes": (
        lambda f: {**f, "image": tf.image.resize(pp.decode_random_crop(f)["image"], [24, 24])},
        lambda: features([[0.1, 0.1, 0.6, 0.9]]),
        (24, 24, 3),
    ),
    "decode_center_crop": (lambda f: pp.decode_center_crop(f, 32), features, (32, 32, 3)),
    "random_geometry": (
        lambda f: pp.random_geometry(f, 32),
        lambda: decoded(tf.uint8),
        (32, 32, 3),
    ),
    "random_color": (pp.random_color, decoded, (60, 80, 3)),
    "normalize": (pp.normalize, decoded, (60, 80, 3)),
    "train_transform": (lambda f: train_transform(f, 32, AugmentConfig()), features, (32, 32, 3)),
    "eval_transform": (lambda f: eval_transform(f, 32), features, (32, 32, 3)),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_eager_and_in_dataset_map(name: str) -> None:
    fn, make_inputs, shape = OPS[name]
    eager, mapped = both_ways(fn, make_inputs())
    for out in (eager, mapped):
        assert out["image"].dtype == tf.float32
        assert tuple(out["image"].shape) == shape
        assert int(out["label"]) == 1  # other keys pass through
        assert np.isfinite(out["image"].numpy()).all()


@pytest.mark.parametrize("name", ["decode_center_crop", "normalize", "eval_transform"])
def test_deterministic_ops_agree_exactly(name: str) -> None:
    fn, make_inputs, _ = OPS[name]
    eager, mapped = both_ways(fn, make_inputs())
    np.testing.assert_allclose(eager["image"].numpy(), mapped["image"].numpy(), atol=1e-5)


def test_center_crop_keeps_the_center() -> None:
    image = np.zeros((64, 128, 3), np.uint8)
    image[:, 48:80] = 255  # a white vertical band in the middle
    out = pp.decode_center_crop({"image": tf.constant(jpeg_bytes(image, quality=100))}, 56)
    # shorter side 64 -> 64 (56 / 0.875), width 128 -> 128; the central 56 columns hold the band
    assert out["image"].numpy()[:, 28].mean() > 240 and out["image"].numpy()[:, 0].mean() < 15


def test_normalize_uses_the_papers_mean_and_std() -> None:
    image = tf.fill([1, 1, 3], 0.0)
    out = pp.normalize({"image": image})["image"].numpy().ravel()
    np.testing.assert_allclose(
        out, [-123.68 / 58.393, -116.779 / 57.12, -103.939 / 57.375], rtol=1e-6
    )


def test_geometry_without_flip_or_rotation_is_a_resize() -> None:
    image = decoded(tf.uint8)
    out = pp.random_geometry(image, 40, flip=False, max_degrees=0)["image"].numpy()
    expected = tf.image.resize(image["image"], [40, 40]).numpy()
    assert np.abs(out - expected)[2:-2, 2:-2].max() < 2.0  # same sampling grid inside


def test_geometry_mirror_flips_left_right() -> None:
    image = tf.cast(tf.io.decode_jpeg(JPEG, channels=3), tf.float32)
    transform = pp.geometry_transform(60, 80, 40, tf.constant(0.0), tf.constant(True))
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[tf.newaxis],
        transforms=transform[tf.newaxis],
        output_shape=[40, 40],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )[0].numpy()
    expected = tf.image.resize(image, [40, 40]).numpy()[:, ::-1]
    assert np.abs(out - expected)[2:-2, 2:-2].max() < 2.0


def test_geometry_rotates_about_the_center() -> None:
    transform = pp.geometry_transform(64, 64, 64, tf.constant(np.pi / 2), tf.constant(False))
    a0, a1, a2, b0, b1, b2 = transform.numpy()[:6]
    center = 31.5
    assert a0 * center + a1 * center + a2 == pytest.approx(center, abs=1e-4)
    assert b0 * center + b1 * center + b2 == pytest.approx(center, abs=1e-4)


def test_color_matrix_identity_gray_and_luma() -> None:
    identity = pp.color_matrix(1.0, 1.0, tf.constant(0.0), tf.constant(True)).numpy()
    np.testing.assert_allclose(identity, np.eye(3), atol=2e-3)
    gray = pp.color_matrix(1.0, 0.0, tf.constant(0.0), tf.constant(True)).numpy()
    rgb = np.array([200.0, 50.0, 10.0])
    assert np.ptp(gray @ rgb) < 1e-3  # saturation 0: all channels equal the luma
    hue = pp.color_matrix(1.0, 1.0, tf.constant(1.0), tf.constant(False)).numpy()
    assert np.dot(pp.LUMA, hue @ rgb) == pytest.approx(np.dot(pp.LUMA, rgb), rel=1e-2)
    brighter = pp.color_matrix(1.2, 1.0, tf.constant(0.0), tf.constant(True)).numpy()
    np.testing.assert_allclose(brighter, 1.2 * identity, rtol=1e-6)


def test_random_crop_stays_within_area_and_aspect() -> None:
    tf.random.set_seed(0)
    shape = tf.io.extract_jpeg_shape(JPEG)
    for _ in range(20):
        _, size, _ = tf.image.sample_distorted_bounding_box(
            shape,
            tf.zeros([1, 0, 4]),
            aspect_ratio_range=(3 / 4, 4 / 3),
            area_range=(0.08, 1.0),
            use_image_if_no_bounding_boxes=True,
        )
        h, w = int(size[0]), int(size[1])
        assert 0.06 * 60 * 80 <= h * w <= 60 * 80
