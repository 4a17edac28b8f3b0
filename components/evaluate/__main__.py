"""Command line: evaluate a servable, gate it against the champion, register it if it passes."""

from __future__ import annotations

import argparse
import json
import sys

from components.evaluate import GateConfig, RegistryError, evaluate, gate_and_register
from components.evaluate.registry import default_tracking_uri


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.evaluate", description=__doc__)
    parser.add_argument("--data", required=True, help="output folder of components.ingest")
    parser.add_argument("--servable", required=True, help="servable folder of components.train")
    parser.add_argument("--output", required=True)
    parser.add_argument("--model-name", help="register under this name if the gate passes")
    parser.add_argument("--min-top1", type=float, default=0.0)
    parser.add_argument("--max-regression", type=float, default=0.005)
    parser.add_argument(
        "--max-drop-from-best",
        type=float,
        default=0.01,
        help="how far below the best top-1 ever registered on the same validation data",
    )
    parser.add_argument("--allow-label-change", action="store_true")
    args = parser.parse_args(argv)
    metrics = evaluate(args.data, args.servable, args.output)
    print(json.dumps({k: metrics[k] for k in ("top1", "top5", "count")}))
    if args.model_name:
        gate = GateConfig(
            min_top1=args.min_top1,
            max_regression=args.max_regression,
            max_drop_from_best=args.max_drop_from_best,
            allow_label_change=args.allow_label_change,
        )
        print(f"registry: {default_tracking_uri()}", file=sys.stderr)
        try:
            result = gate_and_register(
                args.data, args.servable, args.output, metrics, args.model_name, gate
            )
        except RegistryError as err:
            done = (
                "nothing was registered"
                if err.version is None
                else (
                    f"registered as version {err.version}, but the champion alias was not settled"
                )
            )
            print(f"error: {err}; {done}", file=sys.stderr)
            return 1
        print(json.dumps(result))
        return 0 if result["gate"]["passed"] else 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
