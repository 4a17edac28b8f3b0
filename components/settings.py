"""Changing a config: dotted keys applied to the validated model, then validated again.

    apply(TrainConfig(), {"epochs": 3, "augment.flip": False}) -> TrainConfig(epochs=3, ...)

The one way a setting changes on its way from a preset to a component: the command lines'
`--set key=value`, the flow's per-run overrides and the presets built on other presets all go
through here, so an unknown key or a bad value is refused by the model itself, with its name.
"""

from __future__ import annotations

import re
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


# Names that say "credential": access_key, secret, token, password, credentials, api_key,
# auth_string, connection_string...
SECRET_NAME = re.compile(
    r"key|secret|token|passw|credential|auth|connection_string|sas", re.IGNORECASE
)
# Credentials inside values, whatever the setting is called: a password in a URL
# (scheme://user:password@host), an Azure account key or SAS signature in a connection string
# or query (AccountKey=...; sig=...).
SECRET_VALUE = re.compile(r"(://[^/:@\s]+:)[^/@\s]+(@)|((?:AccountKey|SharedAccessSignature|sig)=)"
                          r"[^;&\s]+", re.IGNORECASE)  # fmt: skip
REDACTED = "***"


def _scrubbed(text: str) -> str:
    return SECRET_VALUE.sub(
        lambda m: (
            f"{m.group(1)}{REDACTED}{m.group(2)}" if m.group(1) else f"{m.group(3)}{REDACTED}"
        ),
        text,
    )


def redacted(value: Any) -> Any:
    """`value` with every credential-looking setting replaced by `***`, for logs, config.json
    and MLflow parameters: dict entries whose key names a credential, `--name=value` options
    whose name does (as Beam's `--s3_secret_access_key=...`), the value after a bare `--name`
    option that does, and credentials inside any string (a URL's password, an Azure key or
    signature). The run itself still gets the real values."""
    if isinstance(value, Mapping):
        return {
            k: REDACTED if SECRET_NAME.search(str(k)) and v not in (None, "") else redacted(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        out, hide_next = [], False
        for item in value:
            if hide_next and isinstance(item, str) and not item.startswith("-"):
                out.append(REDACTED)
                hide_next = False
                continue
            hide_next = False
            if isinstance(item, str) and item.startswith("-"):
                name, eq, _ = item.partition("=")
                if SECRET_NAME.search(name):
                    if eq:
                        item = f"{name}={REDACTED}"
                    else:
                        hide_next = True
            out.append(redacted(item))
        return type(value)(out) if isinstance(value, tuple) else out
    if isinstance(value, str):
        return _scrubbed(value)
    return value
