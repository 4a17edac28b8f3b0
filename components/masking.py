"""Secrets kept out of everything a person or another program can read back.

Two layers, as in Airflow's secrets masker:

- **By shape**: a setting or option whose name says "credential" (`api_token`,
  `--s3_secret_access_key=...`, `--aws_secret_access_key VALUE`, a JSON option holding
  `{"AWS_SECRET_ACCESS_KEY": ...}`), a URL's password (`scheme://user:password@host`, the
  password may itself hold `@` or `/`), a credential in a query or connection string
  (`X-Amz-Security-Token=`, `?token=`, `AccountKey=`, `sig=`).
- **By value**: every secret found that way, and every environment variable whose name says
  "credential" (`TRICKFLOW_REGISTRY_KEY`, `MLFLOW_TRACKING_PASSWORD`, `AWS_SECRET_ACCESS_KEY`),
  is registered; a registered value is masked wherever it shows up later (an error message
  that quotes a connection string, a log line that prints an argument list), whatever option
  spelled it.

`redacted(value)` masks a structure for config.json, MLflow parameters and reports;
`mask(text)` masks a text; `install()` masks every log record of the process (and the text of
its exceptions) as it is made. The run itself still gets the real values.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

REDACTED = "***"
# Names that say "credential": secret, token, password, credentials, auth (not author),
# api_key, access_key, private_key, account_key, a name that is or ends in "key" as a word
# (registry_key, AWS_..._KEY), connection_string, sas, signature, sig. Not sort_key's cousins
# like keyframes, monkey or signal.
_NAME = (
    r"secret|token|passw|credential|auth(?!or)|api_?key|access_?key|private_?key|account_?key|"
    r"(?:^|[_.\-])key(?:$|[_.\-]id$)|connection_?string|(?:^|[_.\-])sas(?:$|[_.\-])|signature|"
    r"(?:^|[_.\-])sig$"
)
SECRET_NAME = re.compile(_NAME, re.IGNORECASE)
# Values shorter than this are not registered: masking every "1" or "abc" would hide the log.
# They are still masked by shape (after a credential's name, in a URL).
MIN_REGISTERED = 6
# scheme://user:password@host: the password runs to the last '@' of the word, so one holding
# '@' or '/' (an AWS secret in s3a://KEY:SECRET@bucket) is masked whole.
URL_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@\"']*:)(?P<secret>[^\s\"']+)(?P<tail>@)"
    r"(?=[^\s@\"']*(?:[\s\"']|$))"
)
# name=value in a query, a connection string or an option, where the name says "credential".
_OPTION = r"[A-Za-z0-9_.\-]+"
NAMED_VALUE = re.compile(
    rf"(?P<head>(?:^|(?<=[?&;\s,{{(]))-{{0,2}}(?P<name>{_OPTION})=)(?P<secret>[^&;?\s\"',)}}]+)"
)
# "password": "x", 'aws_secret_access_key': 'x' (a dict or JSON printed in a log line)
QUOTED_VALUE = re.compile(
    r"(?P<head>(?P<q1>[\"'])(?P<name>[A-Za-z0-9_.\-]+)(?P=q1)\s*:\s*(?P<q2>[\"']))"
    r"(?P<secret>[^\"']*)(?=(?P=q2))"
)
# --s3_secret_access_key VALUE (an argument list joined into a line)
SPACED_OPTION = re.compile(
    rf"(?P<head>(?:^|(?<=\s))--?(?P<name>{_OPTION})\s+)(?P<secret>[^\s-]\S*|-[^-\s]\S*)"
)
# Values registered at most: a worker that signs a URL per request must not grow without end.
MAX_REGISTERED = 10_000

_registered: set[str] = set()
_guard = threading.Lock()
_pattern: re.Pattern | None = None


def register(value: Any) -> None:
    """Masks `value` (and its URL-quoted spelling) wherever it appears from now on."""
    if not isinstance(value, str) or len(value) < MIN_REGISTERED or value == REDACTED:
        return
    global _pattern
    with _guard:
        if len(_registered) >= MAX_REGISTERED:
            return
        new = {value, quote(value, safe="")} - _registered
        if new:
            _registered.update(new)
            _pattern = None


def _looks_secret(value: str) -> bool:
    """Whether a value found after a credential's name is worth masking everywhere later: long
    enough and not a plain word (`filename`, `serving_default`), so that a setting named like
    a credential cannot make an ordinary word vanish from every log."""
    plain = value.replace("_", "").replace("-", "").replace(".", "")
    classes = sum(
        any(test(c) for c in plain) for test in (str.islower, str.isupper, str.isdigit)
    ) + (not plain.isalnum())
    return len(value) >= 20 or (len(value) >= MIN_REGISTERED and classes >= 2)


# Variables whose names say "credential" but whose values are where one is, or a switch.
NOT_SECRET_ENV = re.compile(
    r"(_SOCK|_FILE|_PATH|_DIR|_HOME)$|^XAUTHORITY$|^TOKENIZERS_PARALLELISM$"
)


def register_environment(environ: Mapping[str, str] | None = None) -> None:
    """Registers the value of every environment variable whose name says "credential" (not
    the paths to one), and the passwords of URLs held by any variable."""
    for name, value in (os.environ if environ is None else environ).items():
        if SECRET_NAME.search(name) and not NOT_SECRET_ENV.search(name):
            register(value)
        for found in URL_PASSWORD.finditer(value):
            register(found["secret"])


def _registered_pattern() -> re.Pattern | None:
    global _pattern
    with _guard:
        if _pattern is None and _registered:
            ordered = sorted(_registered, key=len, reverse=True)  # the longest spelling first
            _pattern = re.compile("|".join(map(re.escape, ordered)))
        return _pattern


def mask(text: str) -> str:
    """`text` with credentials masked: by shape (registering what it finds), then every
    registered value."""
    if not text:
        return text

    def by_shape(found: re.Match) -> str:
        if _looks_secret(found["secret"]):
            register(found["secret"])
        return f"{found['head']}{REDACTED}{found.groupdict().get('tail') or ''}"

    def by_name(found: re.Match) -> str:
        if not SECRET_NAME.search(found["name"]) or not found["secret"]:
            return found.group(0)
        return by_shape(found)

    text = URL_PASSWORD.sub(by_shape, text)
    text = NAMED_VALUE.sub(by_name, text)
    text = QUOTED_VALUE.sub(by_name, text)
    text = SPACED_OPTION.sub(by_name, text)
    pattern = _registered_pattern()
    return pattern.sub(REDACTED, text) if pattern else text


def redacted(value: Any) -> Any:
    """`value` with every credential masked, for logs, config.json, reports and MLflow
    parameters: dict entries whose key names a credential, `--name=value` options whose name
    does, the value after a bare `--name` option that does (even one starting with a single
    `-`), JSON held in a string (`--environment_config={"env": {...}}`), and every credential
    inside any string (see `mask`)."""
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if SECRET_NAME.search(str(key)) and item not in (None, ""):
                _register_all(item)
                out[key] = REDACTED
            else:
                out[key] = redacted(item)
        return out
    if isinstance(value, list | tuple):
        out, hide_next = [], False
        for item in value:
            if hide_next and isinstance(item, str) and not item.startswith("--"):
                if _looks_secret(item):
                    register(item)
                out.append(REDACTED)
                hide_next = False
                continue
            hide_next = False
            if isinstance(item, str) and item.startswith("-"):
                name, eq, rest = item.partition("=")
                if SECRET_NAME.search(name):
                    if eq:
                        if _looks_secret(rest):
                            register(rest)
                        item = f"{name}={REDACTED}"
                    else:
                        hide_next = True
                elif eq:
                    item = f"{name}={redacted(rest)}"
                    out.append(item)
                    continue
            out.append(redacted(item))
        return type(value)(out) if isinstance(value, tuple) else out
    if isinstance(value, str):
        held = _json_in(value)
        if held is not None:
            inner = redacted(held)
            return value if inner == held else json.dumps(inner)
        return mask(value)
    return value


def scrubbed(value: Any) -> Any:
    """`value` with `mask` applied to every text in it (keys and structure kept as they are)."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, Mapping):
        return {key: scrubbed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrubbed(item) for item in value)
    return value


def _json_in(text: str) -> Any:
    stripped = text.strip()
    if not stripped or stripped[0] not in "{[":
        return None
    try:
        return json.loads(stripped)
    except ValueError:
        return None


def _register_all(value: Any) -> None:
    if isinstance(value, str):
        register(value)
        held = _json_in(value)
        if held is not None:
            _register_all(held)
    elif isinstance(value, Mapping):
        for item in value.values():
            _register_all(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _register_all(item)


class _MaskingFactory:
    """A log record factory that masks each record's message (and its exception's text)."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, *args, **kwargs) -> logging.LogRecord:
        record = self.inner(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports it itself later
            return record
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = mask(logging.Formatter().formatException(record.exc_info))
        return record


def install() -> None:
    """Masks every log record this process makes from now on, and registers the credentials
    in its environment. Idempotent."""
    register_environment()
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _MaskingFactory):
        logging.setLogRecordFactory(_MaskingFactory(factory))
