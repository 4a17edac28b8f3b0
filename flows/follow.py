"""Run a deployment and follow it as a person would read it, then say how it ended.

    python -m flows.follow train-imagenet/demo [-p data_dir=/their/data] [-p work_dir=/their/work] \
        [-p preset=imagenet-resnet50d] [-p 'overrides={"epochs": 3}']

The deployment runs with its own parameters; each `-p` overrides one. From the repository root
it needs nothing exported: the stack's credentials are in the profile prefect.toml names.

Starts the flow run, prints its log lines as they come (each stage as it starts and ends with
its key figure, training a line at a time; none of Prefect's raw event stream), and ends with the
run's summary from report.json: each stage's outcome and time, top-1, the gate's decision, the
registered version and where to look. On failure: the stage, the reason and what to do.

Exit status: 0 the run completed and the gate passed, or there was nothing new to train on;
1 a check said no (anomalies or drift in the data, the gate refused the model); 2 anything
else failed (a missing folder, a crash, a registry that does not answer, a run that was
cancelled). A run whose process died is marked Crashed by the
stack's automation (flows/automations.py) once its heartbeats stop, which ends the wait here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from prefect import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.sorting import LogSort
from prefect.deployments import run_deployment

from flows.artifacts import stage_outcomes

# Lines the engine writes about itself, not about the work.
NOISE = (
    "Finished in state",
    "Created task run",
    "Executing '",
    "Executing deployment step",
    "Deployment step",
    "All deployment steps",
    "Beginning flow run",
    "Running",
    "Worker '",
    "Flow run '",
)
CHECKS = {"validate"}  # a failure here is the data failing a check (exit 1), not a breakage


def parameters(items: list[str]) -> dict:
    """-p key=value pairs; values are JSON where they parse as JSON (numbers, objects)."""
    found = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"-p {item!r}: expected key=value")
        try:
            found[key] = json.loads(value)
        except json.JSONDecodeError:
            found[key] = value
    return found


LOOK_BACK = 50  # log lines read again on each poll


def follow(flow_run_id, out=print, poll: float = 1.0, settle: float = 4.0, grace: float = 30.0):
    """Prints the run's log lines until it ends; returns its final state.

    The worker ships log lines in batches every couple of seconds, so the last ones can reach
    the server after the run's final state: it waits until `settle` seconds pass without any,
    and never more than `grace` seconds after the final state.
    """
    seen: dict = {}  # flow run id -> log lines read: the run's own, then its subflow runs'
    printed: set = set()  # ids of the log lines printed
    quiet_since = final_since = None
    children = FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            # the training, when it runs as a run of the GPU pool's deployment
            for child in client.read_flow_runs(flow_run_filter=children):
                seen.setdefault(child.id, 0)
            seen.setdefault(flow_run_id, 0)
            logs = []
            for run_id, offset in seen.items():
                # From a little before where the last poll ended: a line stamped earlier that
                # reached the server later (the worker's and the flow run's processes ship
                # their batches separately) sorts in there; `printed` keeps each line once.
                start = max(0, offset - LOOK_BACK)
                found = client.read_logs(
                    log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
                    sort=LogSort.TIMESTAMP_ASC,
                    offset=start,
                )
                seen[run_id] = max(offset, start + len(found))
                logs += [record for record in found if record.id not in printed]
                printed.update(record.id for record in found)
            for record in sorted(logs, key=lambda record: record.timestamp):
                message = record.message.strip()
                if record.level >= 20 and not message.startswith(NOISE):
                    stamp = record.timestamp.astimezone().strftime("%H:%M:%S")
                    out(f"{stamp}  {message.splitlines()[0]}")
            if run.state and run.state.is_final():
                now = time.monotonic()
                final_since = final_since or now
                if now - final_since >= grace:
                    return run.state
                if logs or quiet_since is None:
                    quiet_since = now
                elif now - quiet_since >= settle:
                    return run.state
            time.sleep(poll)


def summary(report: dict) -> list[str]:
    """The lines that end the output: stages, outcome, and where to look."""
    lines = ["", "stage               outcome"]
    for stage, outcome in stage_outcomes(report):
        seconds = report.get("seconds", {}).get(stage)
        timing = f" ({seconds:.1f} s)" if seconds is not None else ""
        lines.append(f"  {stage:18s}{outcome}{timing}")
    failed = report.get("failed")
    if failed:
        lines += ["", f"FAILED at {failed['stage']}: {failed['reason']}"]
        if failed.get("hint"):
            lines.append(f"what to do: {failed['hint']}")
        anomalies = (report.get("validate") or {}).get("anomalies") or []
        for row in anomalies[:20]:
            lines.append(f"  {row['split']:10s} {row['feature']:12s} {row['problem']}")
        drifted = [row for row in report.get("drift") or [] if row["drifted"]]
        if drifted:
            lines.append(f"  {'span':12s} {'feature':12s} {'measure':26s} threshold  value")
        for row in drifted[:20]:
            lines.append(
                f"  {row['span']:12s} {row['feature']:12s} {row['measure']:26s} "
                f"{row['threshold']:<9.4g}  {row['value']:.4g}"
            )
    registry = report.get("registry") or {}
    if registry.get("version"):
        alias = " (@champion)" if registry.get("alias") else " (not champion)"
        lines.append(f"registered: {registry['model_name']} v{registry['version']}{alias}")
    # Links that open in any browser (the MLflow server serves the files), else local paths.
    links = report.get("links") or {}
    page = (report.get("validate") or {}).get("statistics_html")
    if links.get("statistics") or page:
        lines.append(f"statistics: {links.get('statistics') or page}")
    if links.get("drift"):
        lines.append(f"drift:      {links['drift']}")
    if links.get("evaluation"):
        lines.append(f"evaluation: {links['evaluation']}")
    train = report.get("train") or {}
    if links.get("curves"):
        lines.append(f"curves:     {links['curves']}")
    elif train.get("folder"):
        lines.append(f"curves:     make tensorboard LOGDIR={train['folder']}/tensorboard")
    lines.append(f"report:     {links.get('report') or report['report_path']}")
    return lines


def report_path(flow_run, pull_steps: list | None) -> Path:
    """Where the run writes report.json: `<work_dir>/runs/<flow run id>/`, a relative work_dir
    taken from the folder the deployment's pull step runs the flow in (as the flow does)."""
    work_dir = Path(str(flow_run.parameters.get("work_dir") or "."))
    if not work_dir.is_absolute():
        where = Path.cwd()
        for step in pull_steps or []:  # each step moves on from where the last one left
            folder = (step.get("prefect.deployments.steps.set_working_directory") or {}).get(
                "directory"
            )
            if folder and "{{" not in folder:  # a template of another step's output: unknown
                where = where / folder
        work_dir = where / work_dir
    return work_dir.resolve() / "runs" / str(flow_run.id) / "report.json"


def exit_status(state_ok: bool, report: dict | None) -> int:
    if report is None:
        return 2
    failed = report.get("failed")
    if failed:
        # anomalies are a check saying no; a crash in the validation stage is not
        said_no = (report.get("validate") or {}).get("passed") is False
        return 1 if failed["stage"] in CHECKS and said_no else 2
    if not state_ok:
        return 2
    if (report.get("decision") or {}).get("train") is False:
        return 0  # nothing new since the champion: nothing to judge
    return 0 if (report.get("gate") or {}).get("passed") else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flows.follow",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("deployment", help="FLOW/DEPLOYMENT, e.g. train-imagenet/demo")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    params = parameters(args.param)
    try:
        with get_client(sync_client=True) as client:  # before starting: no run is started twice
            deployment = client.read_deployment_by_name(args.deployment)
        # The deployment's own parameters, `-p` overriding them (the server merges them so).
        flow_run = run_deployment(args.deployment, parameters=params, timeout=0)
    except Exception as err:  # noqa: BLE001 - one clear line for a missing deployment or server
        print(f"error: could not start {args.deployment}: {err}", file=sys.stderr)
        return 2
    print(f"flow run {flow_run.name} ({flow_run.id}) of {args.deployment}", flush=True)
    state = follow(flow_run.id, out=lambda line: print(line, flush=True))
    path = report_path(flow_run, deployment.pull_steps)
    report = json.loads(path.read_text()) if path.exists() else None
    print(f"\nflow run ended: {state.name}" + (f" ({state.message})" if state.message else ""))
    if state.is_crashed():
        print(
            "the flow run crashed: its process died (killed, out of memory, or the machine went "
            "down); run the deployment again to resume its training from the last checkpoint",
            file=sys.stderr,
        )
    if report is None:
        print(f"no report at {path}: the run ended before it could write one", file=sys.stderr)
    else:
        print("\n".join(summary(report)))
    return exit_status(state.is_completed(), report)


if __name__ == "__main__":
    sys.exit(main())
