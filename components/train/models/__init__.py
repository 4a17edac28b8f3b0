"""Model families, found by name: `create_model("darknet53", num_classes=1000)`.

Each family module registers its variants with `register`; a variant is a function
`(num_classes, **options) -> keras.Model` whose logits are float32 whatever the dtype policy.
Every family also registers a `<name>-tiny` variant (1/16 of the width, 32x32 inputs) for tests.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

_REGISTRY: dict[str, Callable[..., keras.Model]] = {}


def register(name: str):
    """Decorator: makes a model constructor available to `create_model` under `name`."""

    def wrap(builder: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = builder
        return builder

    return wrap


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int, **options) -> keras.Model:
    """Builds the registered model `name`; unknown names list what exists."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    return _REGISTRY[name](num_classes=num_classes, **options)


# The name of the BatchNorm closing each family's residual branch, inside a `..._block<j>_` layer
# name: darknet's `_b_bn` (after the 3x3 back to full width), resnet's `_bn3` (after the 1x1
# expansion). Darknet's names predate this helper and stay: weights files are keyed by layer name.
ZERO_GAMMA_SUFFIXES = ("_b_bn", "_bn3")


def zero_gamma_batchnorms(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """The BatchNorm closing every residual block, whose γ starts at 0 with zero-γ (any family)."""
    return [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
        and "_block" in layer.name
        and layer.name.endswith(ZERO_GAMMA_SUFFIXES)
    ]


def is_channels_first(model: keras.Model) -> bool:
    return any(getattr(layer, "data_format", None) == "channels_first" for layer in model.layers)


def to_channels_last(model: keras.Model) -> keras.Model:
    """The same classifier built channels_last, with the same weights (a copy; any family).

    channels_first is a GPU layout; TensorFlow's CPU convolutions run channels_last only (unless
    oneDNN is on, which it is only on some CPUs). Every family takes NHWC images and keeps its
    kernels HWIO in both layouts, so the twin is the same layers with the layout flipped, the
    input permutation dropped and BatchNorm on the last axis: same weights, same logits.
    """
    if not is_channels_first(model):
        return model

    def flip(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if isinstance(layer, keras.layers.Permute):  # the NHWC -> NCHW entry
            return keras.layers.Identity(name=layer.name, dtype=layer.dtype_policy)
        if config.get("data_format") == "channels_first":
            config["data_format"] = "channels_last"
        if isinstance(layer, keras.layers.BatchNormalization) and config["axis"] in (1, [1]):
            config["axis"] = -1
        return layer.__class__.from_config(config)

    twin = keras.models.clone_model(model, clone_function=flip)
    twin.set_weights(model.get_weights())
    return twin


# Families register themselves on import.
from components.train.models import darknet, resnet  # noqa: E402,F401
