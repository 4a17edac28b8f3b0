"""Command line: python -m components.train --data DATA_DIR --output OUT_DIR [--config FILE]."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from components.train import TrainConfig, run_training


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m components.train", description="Train a classifier on ingested TFRecords."
    )
    parser.add_argument("--data", required=True, help="output folder of components.ingest")
    parser.add_argument("--output", required=True, help="checkpoints, logs and the servable")
    parser.add_argument("--config", help="JSON file of TrainConfig fields (unknown keys fail)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="override one field, e.g. --set epochs=3 --set width=0.25",
    )
    args = parser.parse_args(argv)
    fields = json.loads(Path(args.config).read_text()) if args.config else {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            fields[key] = json.loads(value)
        except json.JSONDecodeError:
            fields[key] = value
    config = TrainConfig(**fields)

    def show(event: dict) -> None:
        if event["type"] == "log":
            print(event["line"], flush=True)
        elif event["type"] == "epoch":
            print(json.dumps(event), flush=True)

    summary = run_training(config, args.data, args.output, on_event=show)
    print(json.dumps(summary["final"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
