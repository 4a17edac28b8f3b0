"""Every transform eagerly and inside Dataset.map ("you'd be surprised how much these differ")."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

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
        lambda f: pp.resize_crop(pp.decode_random_crop(f), 32),
        features,
        (32, 32, 3),
    ),
    "decode_random_crop_boxes": (
        lambda f: pp.resize_crop(pp.decode_random_crop(f), 24),
        lambda: features([[0.1, 0.1, 0.6, 0.9]]),
        (24, 24, 3),
    ),
    "decode_resized_crop": (
        lambda f: pp.resize_crop(pp.decode_resized_crop(f, 32), 32),
        features,
        (32, 32, 3),
    ),
    "train_transform_gluoncv": (
        lambda f: train_transform(f, 32, AugmentConfig(crop="gluoncv")),
        features,
        (32, 32, 3),
    ),
    "resize_crop": (lambda f: pp.resize_crop(f, 40), lambda: decoded(tf.uint8), (40, 40, 3)),
    "decode_center_crop": (lambda f: pp.decode_center_crop(f, 32), features, (32, 32, 3)),
    "train_transform": (lambda f: train_transform(f, 32, AugmentConfig()), features, (32, 32, 3)),
    "eval_transform": (lambda f: eval_transform(f, 32), features, (32, 32, 3)),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_eager_and_in_dataset_map(name: str) -> None:
    fn, make_inputs, shape = OPS[name]
    eager, mapped = both_ways(fn, make_inputs())
    for out in (eager, mapped):
        assert out["image"].dtype == tf.uint8  # a quarter of float32's bytes to the device
        assert tuple(out["image"].shape) == shape
        assert int(out["label"]) == 1  # other keys pass through


@pytest.mark.parametrize("name", ["decode_center_crop", "resize_crop", "eval_transform"])
def test_deterministic_ops_agree_exactly(name: str) -> None:
    fn, make_inputs, _ = OPS[name]
    eager, mapped = both_ways(fn, make_inputs())
    np.testing.assert_array_equal(eager["image"].numpy(), mapped["image"].numpy())


def test_center_crop_keeps_the_center() -> None:
    image = np.zeros((64, 128, 3), np.uint8)
    image[:, 48:80] = 255  # a white vertical band in the middle
    out = pp.decode_center_crop({"image": tf.constant(jpeg_bytes(image, quality=100))}, 56)
    # shorter side 64 -> 64 (56 / 0.875), width 128 -> 128; the central 56 columns hold the band
    assert out["image"].numpy()[:, 28].mean() > 240 and out["image"].numpy()[:, 0].mean() < 15


def _photo(size: int) -> np.ndarray:
    """Fine detail that a shrink must average away: pixel noise over the class pattern."""
    noise = np.random.default_rng(0).integers(-80, 80, (size, size, 3))
    return np.clip(pattern_image(2, 0, (size, size)).astype(np.int32) + noise, 0, 255).astype(
        np.uint8
    )


def _pil_resize(image: np.ndarray, size: int) -> np.ndarray:
    """The independent reference: PIL's bilinear resize, which widens its filter when shrinking."""
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR), np.float64)


def test_training_crops_are_resized_with_the_evaluation_filter() -> None:
    """Both resize with an antialiased bilinear filter, as PIL does: a training crop shrunk 4x
    and an evaluation image shrunk 4x before its center crop match PIL within rounding."""
    jpeg = jpeg_bytes(_photo(128), quality=100)
    image = tf.io.decode_jpeg(jpeg, channels=3).numpy()  # what both transforms decode
    train = pp.resize_crop({"image": tf.constant(image)}, 32)["image"].numpy()
    reference = _pil_resize(image, 32)
    assert np.abs(train - reference).mean() < 1.0 and np.abs(train - reference).max() <= 4

    evaluated = pp.decode_center_crop({"image": tf.constant(jpeg)}, 28)["image"].numpy()
    expected = reference[2:30, 2:30]  # shorter side 128 -> 32 (28 / 0.875), center 28
    assert np.abs(evaluated - expected).mean() < 1.0 and np.abs(evaluated - expected).max() <= 4
    aliased = tf.image.resize(image, [32, 32], method="bilinear", antialias=False).numpy()
    assert np.abs(aliased - reference).mean() > 5  # what training used to see


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


def test_gluoncv_crop_draws_within_area_and_aspect_and_falls_back_to_the_center() -> None:
    """GluonCV's crop: each crop within the area and aspect ranges (none stretched to the whole
    image); when no draw fits (here: every draw wider than the image), the central pixels at
    the training size, not the whole image."""
    tf.random.set_seed(0)
    for _ in range(30):
        h, w, _ = pp.decode_resized_crop(features(), 32)["image"].shape
        assert 0.08 * 60 * 80 * 0.9 <= h * w <= 60 * 80
        assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
    image = tf.io.decode_jpeg(JPEG, channels=3).numpy()  # 60 x 80
    for size, side in ((32, 32), (100, 60)):  # a smaller image gives its central square
        fallback = pp.decode_resized_crop(features(), size, (1.0, 1.0), (3.0, 4.0))["image"]
        top, left = (60 - side) // 2, (80 - side) // 2
        center = image[top : top + side, left : left + side].astype(int)
        # a crop decode upsamples chroma at its edges a little differently: within 3 levels
        assert np.abs(fallback.numpy().astype(int) - center).max() <= 3


def test_resnet_presets_use_gluoncv_augmentation_and_darknet_keeps_the_original() -> None:
    from flows.presets import imagenet_darknet53, imagenet_resnet50d, imagenet_resnet50d_mixup

    for preset in (imagenet_resnet50d, imagenet_resnet50d_mixup):
        augment = preset().train.augment
        assert augment.crop == "gluoncv" and augment.rotation_degrees == 0, preset.__name__
    darknet = imagenet_darknet53().train.augment
    assert darknet.crop == "inception" and darknet.rotation_degrees == 7.0


def test_a_window_twice_the_size_is_decoded_at_a_reduced_scale_and_looks_the_same() -> None:
    """A 296x400 window of a real photo for a 100 px crop is decoded at 1/2 scale (148x200,
    libjpeg's scaled inverse DCT), at 1/4 for 64 px, and, resized, matches full-scale decoding
    of the same pixels within PSNR 35 dB; a window one pixel off a multiple of the scale is
    moved in to one (the same pixels, not a shifted picture); a window under twice the size is
    decoded at full scale, bit for bit as before; in Dataset.map as eagerly."""
    from sklearn.datasets import load_sample_images

    photo = tf.constant(jpeg_bytes(load_sample_images().images[1][:375, :500], quality=90))

    def psnr(reduced: tf.Tensor, full: tf.Tensor, size: int) -> float:
        a, b = (pp.resize_crop({"image": x}, size)["image"].numpy() for x in (reduced, full))
        error = np.mean((a.astype(float) - b) ** 2)
        return float("inf") if error == 0 else 10 * np.log10(255**2 / error)

    window = tf.constant([16, 48, 296, 400])
    full = pp.decode_window(photo, window, 100, dct_scaling=False)
    assert tuple(full.shape) == (296, 400, 3)
    for size, shape in ((100, (148, 200, 3)), (64, (74, 100, 3)), (160, (296, 400, 3))):
        reduced = pp.decode_window(photo, window, size)
        assert tuple(reduced.shape) == shape
        assert psnr(reduced, full, size) > (1e9 if shape[0] == 296 else 35), size
    off = pp.decode_window(photo, tf.constant([17, 49, 296, 400]), 100)  # to [18, 50, 294, 398]
    inner = pp.decode_window(photo, tf.constant([18, 50, 294, 398]), 100, dct_scaling=False)
    assert tuple(off.shape) == (147, 199, 3) and psnr(off, inner, 100) > 35
    mapped = next(
        iter(
            tf.data.Dataset.from_tensors(photo).map(
                lambda jpeg: pp.decode_window(jpeg, window, 100)
            )
        )
    )
    np.testing.assert_array_equal(mapped.numpy(), pp.decode_window(photo, window, 100).numpy())
