"""Model families, found by name: `create_model("darknet53", num_classes=1000)`.

Each family module registers its variants with `register`; a variant is a function
`(num_classes, **options) -> keras.Model` whose logits are float32 whatever the dtype policy.
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


# Families register themselves on import.
from components.train.models import darknet  # noqa: E402,F401
