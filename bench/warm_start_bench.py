"""A warm start against training from scratch, on the demo's digits arriving in two spans.

    .venv/bin/python bench/warm_start_bench.py --work /tmp/warm [--scratch]

Runs the train-imagenet flow (demo preset, under a temporary Prefect server and a local MLflow
registry in WORK) three times, as a weekly deployment with `init_from: champion` would:
1. span 01 (the first half of the scans) only: no champion yet, so from scratch (30 epochs);
2. the same again: nothing new since the champion, nothing trained;
3. span 02 arrives: validated against span 01, trained warm from the champion (a quarter of the
   epochs, a tenth of the peak LR), gated against the champion re-scored on both spans, pair
   by pair;
4. the same again under `promote: better` (a retrain within the noise keeps the champion);
5. the smoke preset, as a test run would (registered under its own name; no champion moves).
With `--scratch`, also 6.: both spans from scratch under another model name, for reference.
Prints each run's steps, seconds and top-1, and the champion's top-1 on both spans.
About 6 minutes on 2 CPU cores (9 with --scratch).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True)
    parser.add_argument("--scratch", action="store_true", help="also train both spans from scratch")
    args = parser.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    os.environ.setdefault("TRICKFLOW_HOME", str(work / "home"))

    from prefect.testing.utilities import prefect_test_harness

    from components.demo_data import write_demo_dataset
    from components.evaluate.registry import Registry
    from flows.train_imagenet import Overrides, train_imagenet

    data = work / "digits"
    write_demo_dataset(data, span=(1, 2))
    warm = Overrides(init_from="champion")
    rows = []

    def run(label: str, overrides: Overrides, preset: str = "demo") -> dict:
        start = time.perf_counter()
        report = train_imagenet(str(data), str(work / "work"), preset, overrides)
        seconds = time.perf_counter() - start
        train, evaluation, gate = report["train"] or {}, report["evaluate"] or {}, report["gate"]
        rows.append(
            {
                "run": label,
                "spans": ",".join(report["spans"] or []),
                "decision": report["decision"]["reason"],
                "init_from": (report["init_from"] or {}).get("version"),
                "epochs": train.get("epochs"),
                "steps": train.get("steps"),
                "seconds": round(seconds, 1),
                "train_seconds": report["seconds"].get("train"),
                "top1": evaluation.get("top1"),
                "gate": gate and gate["reason"],
                "version": report["registry"].get("version"),
                "champion": Registry().champion_version("darknet53-digits"),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        return report

    with prefect_test_harness(server_startup_timeout=120):
        run("span 01, from scratch", warm)
        run("span 01 again", warm)
        write_demo_dataset(data, span=(2, 2))
        run("span 02 arrived, warm start", warm)
        # The same again under `promote: better`: a retrain within the noise keeps the champion.
        run(
            "span 02 again, promote: better",
            Overrides(init_from="champion", retrain="always", promote="better"),
        )
        # A test run: the smoke preset registers under its own name and moves no champion.
        run("smoke preset", Overrides(retrain="always"), preset="smoke")
        if args.scratch:
            run("both spans, from scratch", Overrides(model_name="darknet53-digits-scratch"))
    print("\n| run | spans | epochs | steps | train s | top-1 | gate | champion after |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        top1 = "-" if row["top1"] is None else f"{row['top1']:.4f}"
        print(
            f"| {row['run']} | {row['spans']} | {row['epochs'] or '-'} | {row['steps'] or '-'} "
            f"| {row['train_seconds'] or '-'} | {top1} | {row['gate'] or row['decision']} "
            f"| v{row['champion']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
