"""Command line: python -m components.train --data DATA --output OUT [--config F] [--set k=v]."""

from __future__ import annotations

import json
import sys

from components import cli
from components.train.config import TrainConfig


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(
        "python -m components.train",
        "Train a classifier on ingested TFRecords, e.g. --set model=resnet50d --set epochs=3. "
        "A folder with checkpoints of the same settings resumes.",
        TrainConfig,
    )
    parser.add_argument("--data", required=True, help="output folder of components.ingest")
    parser.add_argument("--output", required=True, help="checkpoints, logs and the servable")
    args = parser.parse_args(argv)
    cli.show_progress()

    def body() -> int:
        config = cli.load_config(TrainConfig, args)
        cli.where(args.data, args.output)
        from components.train.task import run_training  # TensorFlow, once the settings are valid

        summary = run_training(config, args.data, args.output)
        print(json.dumps(summary["final"]))
        return cli.OK

    return cli.run(body)


if __name__ == "__main__":
    sys.exit(main())
