"""The automations the local stack needs: a flow run whose process died is marked Crashed.

    python -m flows.automations [--window SECONDS]

Flow runs started from a deployment emit a heartbeat event every PREFECT_FLOWS_HEARTBEAT_FREQUENCY
seconds (infra/stack.sh sets it for its worker). A run that is killed (out of memory, a reboot,
SIGKILL) sends neither another heartbeat nor a final state, and would otherwise stay Running for
good: `make run` and `flows.follow` would wait on it forever. The automation created here
watches each run separately and, when `window` seconds pass after a heartbeat without the next
one or a final state, sets the run Crashed, which ends the wait (follow exits 2) and lets the
next run of the deployment resume the killed training from its checkpoints.

`infra/stack.sh deploy` runs this; running it again updates the automation in place.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta

from prefect.automations import Automation
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification

NAME = "trickflow: crash zombie flow runs"
DEFAULT_WINDOW = 120  # seconds; four heartbeats at the stack's 30 s frequency


def zombie_automation(window: int) -> Automation:
    """Crashed, for a flow run that went `window` seconds after a heartbeat without another."""
    return Automation(
        name=NAME,
        description=(
            f"Marks a flow run Crashed when {window} s pass after one of its heartbeats without "
            "another heartbeat or a final state (its process died)."
        ),
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=window),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=(
                    f"no heartbeat for {window} s: the flow run's process died (killed, out of "
                    "memory, or the machine went down); running the deployment again resumes "
                    "its training from the last checkpoint"
                ),
            )
        ],
    )


def ensure(window: int) -> Automation:
    """Creates the automation, or updates the one of that name to `window`."""
    wanted = zombie_automation(window)
    try:
        existing = Automation.read(name=NAME)
    except ValueError:  # Prefect's answer when no automation has that name
        existing = None
    if existing is None:
        return wanted.create()
    wanted.id = existing.id
    wanted.update()
    return wanted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.automations", description=__doc__)
    parser.add_argument(
        "--window",
        type=int,
        default=int(os.environ.get("TRICKFLOW_HEARTBEAT_WINDOW", DEFAULT_WINDOW)),
        help="seconds without a heartbeat after which a running flow run is Crashed",
    )
    args = parser.parse_args(argv)
    automation = ensure(args.window)
    print(f"automation {automation.name!r}: flow runs silent for {args.window} s are Crashed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
