"""Command line: python -m components.validate --data DATA_DIR --output OUT [Beam options]."""

from __future__ import annotations

import sys

from components import cli
from components.validate import ValidateConfig, ValidationFailed, validate


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(
        "python -m components.validate",
        "Check ingested TFRecords against the reviewed schema. Unrecognised options go to Beam.",
        ValidateConfig,
    )
    parser.add_argument("--data", required=True, help="output folder of components.ingest")
    parser.add_argument("--output", required=True, help="statistics, anomalies, statistics.html")
    args, beam_args = parser.parse_known_args(argv)
    cli.show_progress()

    def body() -> int:
        config = cli.load_config(
            ValidateConfig, args, data_dir=args.data, output=args.output, beam_args=beam_args
        )
        cli.where(config.data_dir, config.output)
        try:
            report = validate(config)
        except ValidationFailed as err:
            raise cli.CheckFailed(str(err)) from err
        print(f"no anomalies: {report['splits']}; statistics page: {report['statistics_html']}")
        return cli.OK

    return cli.run(body)


if __name__ == "__main__":
    sys.exit(main())
