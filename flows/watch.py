"""Runs started by arriving data: announce each newly complete span of a data folder.

    python -m flows.watch DATA [--deployment train-imagenet/imagenet] [-p key=value ...]
        [--every 60] [--settle 60] [--once]

Looks at DATA/spans/ every `--every` seconds. A span counts once it holds its `_SUCCESS` marker
(written last by whoever copies it in), so a half-copied span is never announced. New complete
spans are announced together, once no other span has completed for `--settle` seconds, as one
Prefect event `trickflow.span.arrived`: its resource names the data folder and the deployment to
run (label `trickflow.deployment`), its payload the folder, the new spans and the `-p`
parameters. The deployment's trigger in prefect.yaml runs it on that event. An announcement
that comes while a run of the same data is going starts a second run at once. With spans the
live run does not have, its ingestion waits until the live run ends (the dataset is rewritten
only when no run reads it), then trains what arrived; with none, it ends (the spans are being
trained by the live run, or are trained and judged already).

What was announced is kept in `$TRICKFLOW_HOME/watch/`, so a restarted watcher announces
nothing twice; its first look announces every complete span (a run with nothing new since the
champion ends in seconds). `--once`: look once, announce what is new without settling, exit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from components import atomic, spans

EVENT = "trickflow.span.arrived"
DEPLOYMENT_LABEL = "trickflow.deployment"


def complete_spans(data_dir: str, known: dict | None = None) -> dict[str, str]:
    """The complete spans under DATA/spans/, in order (none yet: {}), each with the time its
    marker was written: a span marked again (its content changed) is announced again. The
    files of spans announced with the same marker are not walked again. A folder ingestion
    would refuse (spans/ beside train/) is an error."""
    found = spans.source_spans(data_dir, require_complete=False, known=known)
    if found is None:
        return {}
    return {name: spans.marker_stamp(path) for name, path in found[0]}


def state_file(data_dir: str, deployment: str) -> Path:
    home = Path(os.environ.get("TRICKFLOW_HOME", ".trickflow"))
    key = hashlib.sha256(f"{os.path.abspath(data_dir)}\0{deployment}".encode()).hexdigest()[:12]
    return home / "watch" / f"{key}.json"


def announced(path: Path) -> dict[str, str]:
    """The spans announced, each with its marker's time then (a list from before times were
    kept: each counts as announced with the time it has now)."""
    try:
        found = json.loads(path.read_text())["spans"]
    except (OSError, ValueError, KeyError):
        return {}
    return found if isinstance(found, dict) else dict.fromkeys(found)


def announce(data_dir: str, deployment: str, new: list[str], parameters: dict) -> None:
    """One `trickflow.span.arrived` event for `new` spans, sent before this returns."""
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    folder = os.path.abspath(data_dir)
    digest = hashlib.sha256(folder.encode()).hexdigest()[:12]
    sent = emit_event(
        event=EVENT,
        resource={
            "prefect.resource.id": f"trickflow.data.{digest}",
            "prefect.resource.name": folder,
            DEPLOYMENT_LABEL: deployment,
        },
        payload={"data_dir": folder, "spans": new, "parameters": parameters},
    )
    if sent is None:  # Prefect says events are off (PREFECT_API_URL unset, or disabled)
        raise RuntimeError(
            f"could not announce spans {', '.join(new)}: Prefect emits no events here (is "
            "PREFECT_API_URL set, as `infra/stack.sh env` prints it?)"
        )
    EventsWorker.drain_all(timeout=30)


def look(data_dir: str, deployment: str, parameters: dict, state: Path) -> list[str]:
    """Announces the complete spans not announced before; returns them. They are recorded
    as announced only once the event is sent."""
    seen = announced(state)
    complete = complete_spans(data_dir, seen)
    new = fresh(complete, seen)
    if new:
        announce(data_dir, deployment, new, parameters)
        state.parent.mkdir(parents=True, exist_ok=True)
        now = {**{k: v if v is not None else complete.get(k) for k, v in seen.items()},
               **{name: complete[name] for name in new}}  # fmt: skip
        atomic.write_json(state, {"data_dir": os.path.abspath(data_dir), "spans": now})
    return new


def fresh(complete: dict[str, str], seen: dict[str, str | None]) -> list[str]:
    """Complete spans not announced, or marked again since they were (in order)."""
    return [
        name
        for name, marked in complete.items()
        if name not in seen or (seen[name] is not None and seen[name] != marked)
    ]


Pending = tuple[frozenset[str], float] | None  # spans seen complete, unannounced, and since when


def settled(waiting: set[str], pending: Pending, now: float, settle: float) -> tuple[Pending, bool]:
    """Whether to announce now: once the same unannounced spans have stayed the same for
    `settle` seconds (a span completing meanwhile restarts the wait, so spans copied in one
    after another go out in one announcement, and start one run)."""
    if not waiting:
        return None, False
    if pending is None or pending[0] != waiting:
        return (frozenset(waiting), now), False
    if now - pending[1] >= settle:
        return None, True
    return pending, False


def parameters(items: list[str]) -> dict:
    from flows.follow import parameters as parsed

    return parsed(items)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flows.watch",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("data_dir", help="the folder whose spans/ to watch")
    parser.add_argument("--deployment", default="train-imagenet/imagenet")
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="parameters the triggered run gets (work_dir, preset, overrides)",
    )
    parser.add_argument("--every", type=float, default=60.0, help="seconds between looks")
    parser.add_argument(
        "--settle",
        type=float,
        default=60.0,
        help="announce once no span has completed for this long",
    )
    parser.add_argument("--once", action="store_true", help="look once and exit")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.data_dir):
        parser.error(f"{args.data_dir} is not a folder")
    given = parameters(args.param)
    state = state_file(args.data_dir, args.deployment)
    if args.once:
        try:
            new = look(args.data_dir, args.deployment, given, state)
        except (ValueError, RuntimeError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"announced {', '.join(new)}" if new else "nothing new", flush=True)
        return 0
    print(f"watching {os.path.abspath(args.data_dir)}/spans for {args.deployment}", flush=True)
    pending: Pending = None
    while True:
        try:
            seen = announced(state)
            waiting = set(fresh(complete_spans(args.data_dir, seen), seen))
            pending, ready = settled(waiting, pending, time.monotonic(), args.settle)
            if ready:
                new = look(args.data_dir, args.deployment, given, state)
                print(f"announced {', '.join(new)}", flush=True)
        except (ValueError, RuntimeError) as err:  # said, and tried again at the next look
            print(f"error: {err}", file=sys.stderr, flush=True)
        time.sleep(min(args.every, args.settle) if pending else args.every)


if __name__ == "__main__":
    sys.exit(main())
