"""Command line: python -m components.ingest --source SRC --output OUT [Beam options]."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from components.ingest import LOCAL_BEAM_ARGS, IngestConfig, run_ingest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m components.ingest",
        description="Ingest a class-per-folder or ImageNet image set into sharded TFRecords. "
        "Unrecognised options go to Beam (e.g. --runner=DataflowRunner --project=...); "
        f"without them it runs locally with: {' '.join(LOCAL_BEAM_ARGS)}",
    )
    parser.add_argument("--source", required=True, help="dataset root, local or gs:// / s3://")
    parser.add_argument("--output", required=True, help="folder for shards and reports")
    parser.add_argument("--train-shards", type=int, default=None)
    parser.add_argument("--validation-shards", type=int, default=None)
    parser.add_argument(
        "--max-side", type=int, default=None, help="downscale images whose longer side exceeds this"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="conversion threads per worker (default: cores)"
    )
    args, beam_args = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    config = IngestConfig(
        source=args.source,
        output=args.output,
        train_shards=args.train_shards,
        validation_shards=args.validation_shards,
        max_side=args.max_side,
        threads=args.threads,
        beam_args=beam_args,
    )
    try:
        metadata = run_ingest(config)
    except ValueError as err:  # bad input: the message names the file and the problem
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # the job failed or lost records: nothing is reused
        print(f"error: {err}", file=sys.stderr)
        return 1
    summary = {k: metadata[k] for k in ("records", "quarantined", "num_classes", "reused")}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
