"""Darknet53: shapes, pinned parameter counts, config round-trip, routes, zero-γ, options."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from components.train.models import available_models, create_model
from components.train.models.darknet import backbone_routes
from components.train.tricks import zero_gamma_layers

TINY = {"width": 0.125, "input_size": 32}


def trainable(model: keras.Model) -> int:
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


def test_full_darknet53_parameter_count_is_pinned() -> None:
    model = create_model("darknet53", num_classes=1000)
    # 41.61M trainable, as timm's darknet53 and GluonCV's report; BN statistics make the rest.
    assert trainable(model) == 41_609_928
    assert model.count_params() == 41_645_640
    assert model.output_shape == (None, 1000)


def test_tiny_variant_shapes_and_count() -> None:
    model = create_model("darknet53", num_classes=10, **TINY)
    assert model.count_params() == 643_894
    logits = model(np.random.rand(2, 32, 32, 3).astype("float32"))
    assert logits.shape == (2, 10) and logits.dtype == "float32"


def test_routes_expose_the_three_yolo_feature_maps() -> None:
    routes = backbone_routes(create_model("darknet53", num_classes=1000))
    assert [tuple(o.shape) for o in routes.outputs] == [
        (None, 28, 28, 256),
        (None, 14, 14, 512),
        (None, 7, 7, 1024),
    ]


def test_config_round_trip() -> None:
    model = create_model("darknet53", num_classes=5, **TINY)
    clone = keras.Model.from_config(model.get_config())
    assert clone.count_params() == model.count_params()
    clone.set_weights(model.get_weights())
    x = np.random.rand(2, 32, 32, 3).astype("float32")
    np.testing.assert_allclose(clone(x), model(x), atol=1e-5)


def test_channels_first_has_the_same_parameters() -> None:
    first = create_model("darknet53", num_classes=10, data_format="channels_first", **TINY)
    assert first.count_params() == 643_894
    assert first.get_layer("route3").output.shape[1] == 128  # (B, C, H, W)


def test_zero_gamma_initializes_the_last_bn_of_every_block() -> None:
    model = create_model("darknet53", num_classes=10, **TINY)
    closing = zero_gamma_layers(model)
    assert len(closing) == 1 + 2 + 8 + 8 + 4
    assert all(not np.any(layer.gamma.numpy()) for layer in closing)
    others = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization) and layer not in closing
    ]
    assert all(np.all(layer.gamma.numpy() == 1) for layer in others)
    off = create_model("darknet53", num_classes=10, zero_gamma=False, **TINY)
    assert all(np.all(layer.gamma.numpy() == 1) for layer in zero_gamma_layers(off))


def test_convs_have_no_bias_and_the_head_does() -> None:
    model = create_model("darknet53", num_classes=10, **TINY)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.name for c in convs if c.use_bias] == ["logits_conv"]


def test_mixed_precision_keeps_logits_float32() -> None:
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = create_model("darknet53", num_classes=10, **TINY)
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.get_layer("stem_conv").compute_dtype == "float16"
    assert model(np.zeros((1, 32, 32, 3), "float32")).dtype == "float32"


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("resnet9000", {}, "unknown model"),
        ("darknet53", {"width": 0}, "width"),
        ("darknet53", {"input_size": 16}, "input_size"),
        ("darknet53", {"data_format": "nchw"}, "data_format"),
    ],
)
def test_bad_options_are_refused(name: str, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_model(name, num_classes=10, **options)


def test_registry_lists_darknet53() -> None:
    assert "darknet53" in available_models()
