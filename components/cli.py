"""The command-line convention every `python -m components.X` follows.

- Paths are flags (`--data`, `--output`, ...); the component's settings are its config model,
  read from `--config FILE` (JSON) and adjusted with `--set key=value` (repeatable; the value is
  JSON where it parses as JSON, dotted keys reach nested fields: `--set augment.flip=false`).
  Unknown keys are errors, as in the models themselves.
- Each command prints where it reads and where it writes before it starts, then the component's
  progress events (components/events.py) as log lines on standard error.
- Exit status: 0 success; 1 a check said no (anomalies in the data, the gate refused the
  model); 2 bad input or a broken environment (a missing file, an unknown setting, a Beam job
  that failed or lost records, a registry that does not answer, a training that diverged), with
  one line `error: ...` naming the file or the service.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ValidationError

from components import settings

OK, CHECK_FAILED, BAD_INPUT = 0, 1, 2


class CheckFailed(Exception):
    """A check said no; the message says which and why (exit 1)."""


def parser(prog: str, description: str, config: type[BaseModel]) -> argparse.ArgumentParser:
    """An argument parser with the shared --config and --set options for `config`'s fields."""
    fields = ", ".join(config.model_fields)
    result = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=f"settings ({config.__name__}): {fields}. Exit status: 0 done, 1 a check said "
        "no, 2 bad input or a broken environment.",
    )
    result.add_argument("--config", metavar="FILE", help=f"JSON file of {config.__name__} fields")
    result.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one setting, e.g. --set epochs=3 (repeatable; dotted keys for nested fields)",
    )
    return result


def load_config(config: type[BaseModel], args: argparse.Namespace, **fixed):
    """The validated config: --config's fields, then each --set, then `fixed` (the paths)."""
    fields: dict = {}
    if args.config:
        path = Path(args.config)
        try:
            fields = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"--config {path}: {err}") from err
        if not isinstance(fields, dict):
            raise ValueError(f"--config {path}: expected a JSON object of {config.__name__} fields")
    updates = {}
    for item in args.set:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected key=value")
        try:
            updates[key] = json.loads(text)
        except json.JSONDecodeError:
            updates[key] = text
    return config.model_validate({**settings.assign(fields, updates), **fixed})


def show_progress() -> None:
    """Progress events and warnings as log lines on standard error; Beam's chatter hidden."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)


def run(main: Callable[[], int | None]) -> int:
    """Runs a command's body with the shared exit statuses and one-line errors."""
    try:
        return main() or OK
    except CheckFailed as err:
        print(f"check failed: {err}", file=sys.stderr)
        return CHECK_FAILED
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        print(f"error: invalid settings: {problems}", file=sys.stderr)
        return BAD_INPUT
    except (ValueError, OSError, RuntimeError) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return BAD_INPUT
    except Exception as err:  # noqa: BLE001 - anything else is a failure too, never exit 1
        first = (str(err).splitlines() or [""])[0]
        print(f"error: {type(err).__name__}: {first}", file=sys.stderr)
        return BAD_INPUT


def where(reads: str, writes: str) -> None:
    """The line each command starts with."""
    print(f"reading {reads}; writing {writes}", file=sys.stderr, flush=True)
