"""Command line: python -m components.ingest --source SRC --output OUT [--set k=v] [Beam args]."""

from __future__ import annotations

import json
import sys

from components import cli
from components.ingest import LOCAL_BEAM_ARGS, IngestConfig, run_ingest


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(
        "python -m components.ingest",
        "Ingest a class-per-folder or ImageNet image set into sharded TFRecords, e.g. "
        "--set train_shards=1024 --set max_side=1000. Unrecognised options go to Beam (e.g. "
        "--runner=DataflowRunner --project=...); without them it runs locally with: "
        f"{' '.join(LOCAL_BEAM_ARGS)}",
        IngestConfig,
    )
    parser.add_argument("--source", required=True, help="dataset root, local or gs:// / s3://")
    parser.add_argument("--output", required=True, help="folder for shards and reports")
    args, beam_args = parser.parse_known_args(argv)
    cli.show_progress()

    def body() -> int:
        config = cli.load_config(
            IngestConfig, args, source=args.source, output=args.output, beam_args=beam_args
        )
        cli.where(config.source, config.output)
        metadata = run_ingest(config)  # ValueError: bad input; RuntimeError: the job failed
        summary = {k: metadata[k] for k in ("records", "quarantined", "num_classes", "reused")}
        print(json.dumps(summary))
        return cli.OK

    return cli.run(body)


if __name__ == "__main__":
    sys.exit(main())
