"""Command line: evaluate a servable, gate it against the champion, register it if it passes.

    python -m components.evaluate --data DATA --servable RUN/servable --output EVAL \
        [--model-name NAME] [--set min_top1=0.5] [--set max_regression=0.005]
"""

from __future__ import annotations

import json
import sys

from components import cli
from components.evaluate import GateConfig, RegistryError, evaluate, gate_and_register
from components.evaluate.registry import default_tracking_uri


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(
        "python -m components.evaluate",
        "Evaluate a servable on the center-crop validation set; with --model-name, gate it "
        "against the champion and register it if it passes (the settings are the gate's).",
        GateConfig,
    )
    parser.add_argument("--data", required=True, help="output folder of components.ingest")
    parser.add_argument("--servable", required=True, help="servable folder of components.train")
    parser.add_argument("--output", required=True, help="evaluation.json and evaluation.png")
    parser.add_argument("--model-name", help="register under this name if the gate passes")
    parser.add_argument("--batch-size", type=int, default=64, help="images per servable call")
    args = parser.parse_args(argv)
    cli.show_progress()

    def body() -> int:
        gate = cli.load_config(GateConfig, args)
        cli.where(f"{args.data} and {args.servable}", args.output)
        metrics = evaluate(args.data, args.servable, args.output, batch_size=args.batch_size)
        print(json.dumps({k: metrics[k] for k in ("top1", "top5", "count")}))
        if not args.model_name:
            return cli.OK
        print(f"registry: {default_tracking_uri()}", file=sys.stderr)
        try:
            result = gate_and_register(
                args.data, args.servable, args.output, metrics, args.model_name, gate
            )
        except RegistryError as err:
            done = (
                "nothing was registered"
                if err.version is None
                else f"registered as version {err.version}, but the champion alias was not settled"
            )
            raise RuntimeError(f"{err}; {done}") from err
        print(json.dumps(result))
        if not result["gate"]["passed"]:
            raise cli.CheckFailed(f"the gate refused the model: {result['gate']['reason']}")
        return cli.OK

    return cli.run(body)


if __name__ == "__main__":
    sys.exit(main())
