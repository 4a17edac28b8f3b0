"""Command line: python -m components.validate --data DATA_DIR --output OUT [Beam options]."""

from __future__ import annotations

import argparse
import logging
import sys

from components.validate import ValidateConfig, ValidationFailed, validate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m components.validate",
        description="Check ingested TFRecords against the schema.",
    )
    parser.add_argument("--data", required=True, help="output folder of components.ingest")
    parser.add_argument("--output", required=True)
    args, beam_args = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    try:
        report = validate(
            ValidateConfig(data_dir=args.data, output=args.output, beam_args=beam_args)
        )
    except ValidationFailed as err:
        print(str(err), file=sys.stderr)
        return 1
    print(f"no anomalies: {report['splits']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
