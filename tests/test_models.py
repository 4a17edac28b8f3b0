"""Darknet53 and ResNet-50 (B, D): shapes, pinned parameter counts, config round-trip, routes,
zero-γ, options, and one training step of every family's tiny variant."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from components.train.models import (
    available_models,
    create_model,
    is_channels_first,
    to_channels_last,
    zero_gamma_batchnorms,
)
from components.train.models.darknet import backbone_routes

TINY = {"width": 0.125, "input_size": 32}
TINY_VARIANTS = sorted(name for name in available_models() if name.endswith("-tiny"))
RESNET_TINY = ["resnet50-tiny", "resnet50d-tiny"]


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
    closing = zero_gamma_batchnorms(model)
    assert len(closing) == 1 + 2 + 8 + 8 + 4
    assert all(not np.any(layer.gamma.numpy()) for layer in closing)
    others = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization) and layer not in closing
    ]
    assert all(np.all(layer.gamma.numpy() == 1) for layer in others)
    off = create_model("darknet53", num_classes=10, zero_gamma=False, **TINY)
    assert all(np.all(layer.gamma.numpy() == 1) for layer in zero_gamma_batchnorms(off))


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
        ("resnet50", {"width": -1}, "width"),
        ("resnet50d", {"input_size": 16}, "input_size"),
        ("resnet50-tiny", {"data_format": "NCHW"}, "data_format"),
    ],
)
def test_bad_options_are_refused(name: str, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_model(name, num_classes=10, **options)


def test_registry_lists_every_family_and_its_tiny_variant() -> None:
    names = available_models()
    assert {"darknet53", "resnet50", "resnet50d"} <= set(names)
    assert all(f"{name}-tiny" in names for name in names if not name.endswith("-tiny"))


@pytest.mark.parametrize(
    ("name", "trainable_count", "total"),
    [
        # torchvision's resnet50 and timm's resnet50d; BN moving mean/variance make the rest.
        ("resnet50", 25_557_032, 25_610_152),
        ("resnet50d", 25_576_264, 25_629_512),
    ],
)
def test_full_resnet_parameter_counts_shapes_and_zero_gamma(
    name: str, trainable_count: int, total: int
) -> None:
    model = create_model(name, num_classes=1000)
    assert trainable(model) == trainable_count
    assert model.count_params() == total
    assert model.output_shape == (None, 1000)
    # torchvision's feature map sizes: 224 -> 112 (stem) -> 56 (pool) -> 56, 28, 14, 7.
    assert model.get_layer("stem_pool").output.shape == (None, 56, 56, 64)
    last = {1: 3, 2: 4, 3: 6, 4: 3}
    assert [
        tuple(model.get_layer(f"stage{s}_block{b}_out").output.shape) for s, b in last.items()
    ] == [
        (None, 56, 56, 256),
        (None, 28, 28, 512),
        (None, 14, 14, 1024),
        (None, 7, 7, 2048),
    ]
    closing = zero_gamma_batchnorms(model)
    assert len(closing) == 3 + 4 + 6 + 3
    assert all(layer.name.endswith("_bn3") and not np.any(layer.gamma.numpy()) for layer in closing)


@pytest.mark.parametrize(
    ("name", "blocks"), [("darknet53-tiny", 23), *((n, 16) for n in RESNET_TINY)]
)
def test_zero_gamma_batchnorms_of_every_family(name: str, blocks: int) -> None:
    model = create_model(name, num_classes=10)
    closing = zero_gamma_batchnorms(model)
    assert len(closing) == blocks
    assert all(not np.any(layer.gamma.numpy()) for layer in closing)
    others = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization) and layer not in closing
    ]
    assert others and all(np.all(layer.gamma.numpy() == 1) for layer in others)
    off = create_model(name, num_classes=10, zero_gamma=False)
    assert all(np.all(layer.gamma.numpy() == 1) for layer in zero_gamma_batchnorms(off))


@pytest.mark.parametrize("name", TINY_VARIANTS)
def test_mixed_bfloat16_keeps_logits_float32(name: str) -> None:
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = create_model(name, num_classes=7)
    finally:
        keras.config.set_dtype_policy(previous)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs[0].compute_dtype == "bfloat16"
    logits = model(np.random.rand(2, 32, 32, 3).astype("float32"))
    assert logits.shape == (2, 7) and logits.dtype == "float32"


@pytest.mark.parametrize("name", RESNET_TINY)
def test_resnet_convs_have_no_bias_and_the_head_does(name: str) -> None:
    model = create_model(name, num_classes=10)
    with_bias = [layer.name for layer in model.layers if getattr(layer, "use_bias", False)]
    assert with_bias == ["logits"]


@pytest.mark.parametrize("name", RESNET_TINY)
def test_resnet_config_round_trip(name: str) -> None:
    model = create_model(name, num_classes=5)
    clone = keras.Model.from_config(model.get_config())
    assert clone.count_params() == model.count_params()
    clone.set_weights(model.get_weights())
    x = np.random.rand(2, 32, 32, 3).astype("float32")
    np.testing.assert_allclose(clone(x), model(x), atol=1e-5)


def _cpu_runs_nchw_convolutions() -> bool:
    """TensorFlow's CPU kernels take NCHW only with oneDNN, which it turns on only on some CPUs
    (AVX-512 ones): the same test runs on both kinds, and says which it met."""
    import tensorflow as tf

    try:
        tf.nn.conv2d(tf.zeros([1, 1, 2, 2]), tf.zeros([1, 1, 1, 1]), 1, "VALID", "NCHW")
        return True
    except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError):
        return False


NCHW_HERE = "nchw-kernels" if _cpu_runs_nchw_convolutions() else "no-nchw-kernels"


@pytest.mark.parametrize("cpu", [NCHW_HERE])
@pytest.mark.parametrize("name", TINY_VARIANTS)
def test_channels_first_computes_the_same_logits_on_any_cpu(name: str, cpu: str) -> None:
    """channels_first is a GPU layout with the same weights. On every CPU: compiled by XLA it
    gives channels_last's logits, and so does its channels_last twin (what training builds on
    a TensorFlow CPU and what every export contains). Run as it is, eagerly, it does too where
    the CPU has NCHW kernels; where it has none, TensorFlow refuses it with a clear error."""
    import tensorflow as tf

    last = create_model(name, num_classes=10)
    first = create_model(name, num_classes=10, data_format="channels_first")
    assert first.count_params() == last.count_params()
    rng = np.random.default_rng(0)
    weights = [rng.normal(0, 0.2, w.shape).astype("float32") for w in last.get_weights()]
    weights = [np.abs(w) + 0.5 if w.ndim == 1 else w for w in weights]  # BN variances > 0
    last.set_weights(weights)
    first.set_weights(weights)  # same shapes: Keras kernels are HWIO in both layouts
    x = rng.random((2, 32, 32, 3)).astype("float32")
    expected = np.asarray(last(x))

    compiled = tf.function(lambda images: first(images), jit_compile=True)
    np.testing.assert_allclose(compiled(x), expected, rtol=1e-4, atol=1e-4)
    twin = to_channels_last(first)
    assert not is_channels_first(twin) and is_channels_first(first)
    np.testing.assert_allclose(twin(x), expected, rtol=1e-5, atol=1e-5)
    if cpu == "nchw-kernels":
        np.testing.assert_allclose(first(x), expected, rtol=1e-4, atol=1e-4)
    else:
        with pytest.raises(Exception, match="only supports the NHWC tensor format on the CPU"):
            first(x)


def test_a_tensorflow_cpu_trains_channels_first_models_channels_last() -> None:
    from components.train.devices import Devices

    assert Devices("cpu").data_format("channels_first") == "channels_last"
    assert Devices("gpu", 9.0).data_format("channels_first") == "channels_first"
    assert Devices("cpu", backend="jax").data_format("channels_first") == "channels_first"
    assert Devices("cpu").data_format("channels_last") == "channels_last"


@pytest.mark.parametrize("name", TINY_VARIANTS)
def test_tiny_variant_trains_one_step(name: str) -> None:
    model = create_model(name, num_classes=4)
    model.compile(
        optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    x = np.random.rand(8, 32, 32, 3).astype("float32")
    loss = model.train_on_batch(x, np.arange(8) % 4)
    assert np.isfinite(loss)


def test_a_warm_start_loads_every_weight_by_its_path_and_refuses_other_names(tmp_path) -> None:
    """The weights a warm start loads equal the saved version's, variable by variable path; a
    list of them in another order still lands each on its own variable (by position, a
    BatchNorm's gamma, beta, mean and variance, all of one shape, would trade places without a
    word); a model of the very same shapes under other names is refused, naming a variable."""
    from components.train.loop import copy_by_path, start_from

    rng = np.random.default_rng(0)
    trained = create_model("darknet53-tiny", 10)
    for variable in trained.weights:  # every value distinct, BN statistics included
        variable.assign(rng.normal(size=variable.shape).astype(variable.dtype))
    path = tmp_path / "v1.keras"
    trained.save(path)
    saved = {v.path: v.numpy() for v in keras.saving.load_model(path, compile=False).weights}

    fresh = create_model("darknet53-tiny", 10)
    start_from(fresh, str(path), 10, 32)
    assert {v.path for v in fresh.weights} == set(saved)
    for variable in fresh.weights:
        np.testing.assert_array_equal(variable.numpy(), saved[variable.path])

    shuffled = create_model("darknet53-tiny", 10)
    copy_by_path(list(reversed(trained.weights)), shuffled.weights)
    for variable in shuffled.weights:
        np.testing.assert_array_equal(variable.numpy(), saved[variable.path])

    def renamed(layer: keras.layers.Layer) -> keras.layers.Layer:
        return layer.__class__.from_config({**layer.get_config(), "name": f"x_{layer.name}"})

    keras.models.clone_model(trained, clone_function=renamed).save(tmp_path / "other.keras")
    with pytest.raises(ValueError, match=r"not this training's model: \S+/kernel is missing"):
        start_from(create_model("darknet53-tiny", 10), str(tmp_path / "other.keras"), 10, 32)
