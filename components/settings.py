"""Changing a config: dotted keys applied to the validated model, then validated again.

    apply(TrainConfig(), {"epochs": 3, "augment.flip": False}) -> TrainConfig(epochs=3, ...)

The one way a setting changes on its way from a preset to a component: the command lines'
`--set key=value`, the flow's per-run overrides and the presets built on other presets all go
through here, so an unknown key or a bad value is refused by the model itself, with its name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

Config = TypeVar("Config", bound=BaseModel)


def assign(fields: dict, updates: Mapping[str, Any]) -> dict:
    """`fields` (plain, nested dicts) with each dotted key of `updates` set; a copy."""
    result = _copy(fields)
    for key, value in updates.items():
        *parents, last = key.split(".")
        if not last or not all(parents):
            raise ValueError(f"setting {key!r}: expected a name or dotted.names")
        target = result
        for depth, parent in enumerate(parents):
            inner = target.setdefault(parent, {})
            if not isinstance(inner, dict):
                where = ".".join(parents[: depth + 1])
                raise ValueError(f"setting {key!r}: {where} is a value, not a group of settings")
            target = inner
        target[last] = value
    return result


def apply(config: Config, updates: Mapping[str, Any]) -> Config:
    """`config` with `updates` (dotted keys) applied and the whole validated again."""
    if not updates:
        return config
    return type(config).model_validate(assign(config.model_dump(), updates))


def _copy(fields: dict) -> dict:
    return {k: _copy(v) if isinstance(v, dict) else v for k, v in fields.items()}
