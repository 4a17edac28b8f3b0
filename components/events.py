"""Progress events: the one shape in which every component says what it is doing.

    run_ingest(config, on_event)      validate(config, on_event)
    run_training(config, data, out, on_event)      evaluate(data, servable, out, on_event)

An event is a dict with
    "component"  "ingest", "validate", "train" or "evaluate"
    "type"       "stage" (a step starts or ends), "progress" (done of total: shards written,
                 images evaluated), or training's own "start", "log", "epoch" and "done"
    "message"    one line for a person, e.g. "120/1024 shards written"
    "level"      a `logging` level: INFO for what a person follows, DEBUG for the rest
                 (an epoch that was not evaluated, each evaluated batch)
and the figures of its type ("progress": done, total; training's "log": step, lr, loss, ...).
A consumer may be called from a component's own threads (ingestion's shard watcher). Whoever
runs a component decides what to do with them: the command lines log the messages, the
flow logs them too and turns the figures into curves and progress bars.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]
OnEvent = Callable[[Event], None]
TYPES = {"stage", "progress", "start", "log", "epoch", "done"}
RESERVED = {"component", "type", "message", "level"}


def event(component: str, kind: str, message: str, level: int = logging.INFO, **figures) -> Event:
    if kind not in TYPES:
        raise ValueError(f"event type {kind!r}: expected one of {sorted(TYPES)}")
    clash = RESERVED & figures.keys()
    if clash:
        raise ValueError(f"event figures may not be named {sorted(clash)}")
    return {"component": component, "type": kind, "message": message, "level": level, **figures}


def stage(component: str, message: str) -> Event:
    """A step starts or ends (INFO)."""
    return event(component, "stage", message)


def progress(component: str, done: int, total: int, what: str, **figures) -> Event:
    return event(component, "progress", f"{done}/{total} {what}", done=done, total=total, **figures)


def log_to(logger: logging.Logger) -> OnEvent:
    """The default consumer: each event's message on `logger`, at the event's level."""

    def on_event(event: Event) -> None:
        logger.log(event["level"], "%s", event["message"])

    return on_event
