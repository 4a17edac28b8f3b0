"""The automations the stack needs: dead runs are Crashed, and failures are heard.

    python -m flows.automations [--window SECONDS] [--notify-url URL]

Flow runs started from a deployment emit a heartbeat event every PREFECT_FLOWS_HEARTBEAT_FREQUENCY
seconds (infra/stack.sh sets it for its worker). A run that is killed (out of memory, a reboot,
SIGKILL) sends neither another heartbeat nor a final state, and would otherwise stay Running for
good: `make run` and `flows.follow` would wait on it forever. The automation created here
watches each run separately and, when `window` seconds pass after a heartbeat without the next
one or a final state, sets the run Crashed, which ends the wait (follow exits 2) and lets the
next run of the deployment resume the killed training from its checkpoints.

With a webhook URL (`--notify-url`, or TRICKFLOW_NOTIFY_URL when `infra/stack.sh deploy` runs
this), a second automation posts every Failed or Crashed train-imagenet run to it, saying which
stage failed and why (the run's final message), through a webhook block `trickflow-failures`
whose JSON body, `{"text": ...}`, is what a Slack, Mattermost or Teams incoming webhook takes.

`infra/stack.sh deploy` runs this; running it again updates the automations in place.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta

from prefect.automations import Automation
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState, SendNotification
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification

NAME = "trickflow: crash zombie flow runs"
NOTIFY_NAME = "trickflow: notify on failed runs"
NOTIFY_BLOCK = "trickflow-failures"
WEBHOOK_SECRET = "webhook_url"
FLOW = "train-imagenet"
# The run's message names paths, classes and spans from data: Slack and Mattermost read `<...>`
# as a mention (`<!channel>`) or a link (`<https://x|text>`), so `&`, `<` and `>` go as the
# entities their message format asks for.
SLACK_ESCAPED = " | replace('&', '&amp;') | replace('<', '&lt;') | replace('>', '&gt;')"
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


def failure_automation(block_document_id) -> Automation:
    """Posts each Failed or Crashed train-imagenet run, with its stage and reason, to the
    webhook block."""
    return Automation(
        name=NOTIFY_NAME,
        description=f"Sends every Failed or Crashed {FLOW} run to the {NOTIFY_BLOCK} webhook.",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=ResourceSpecification(
                {"prefect.resource.role": "flow", "prefect.resource.name": FLOW}
            ),
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[
            SendNotification(
                block_document_id=block_document_id,
                subject=f"{FLOW} run {{{{ flow_run.name }}}} {{{{ flow_run.state.name }}}}",
                body=(
                    "{{ flow_run.name }} ({{ deployment.name if deployment else 'no deployment' "
                    "}}) ended {{ flow_run.state.name }}: {{ flow_run.state.message"
                    + SLACK_ESCAPED
                    + " }}\nflow run id: {{ flow_run.id }}"
                ),
            )
        ],
    )


def _ensure(wanted: Automation) -> Automation:
    """Creates the automation, or updates the one of that name to `wanted`."""
    try:
        existing = Automation.read(name=wanted.name)
    except ValueError:  # Prefect's answer when no automation has that name
        existing = None
    if existing is None:
        return wanted.create()
    wanted.id = existing.id
    wanted.update()
    return wanted


def ensure(window: int) -> Automation:
    """Creates the zombie automation, or updates the one of that name to `window`."""
    return _ensure(zombie_automation(window))


def ensure_notifications(url: str) -> Automation:
    """The webhook block (made or updated to `url`) and the automation that posts to it. The
    URL is the block's secret (a Slack webhook URL is its credential): the block's plain
    `url` field, which every user of the Prefect server can read, holds only a placeholder."""
    block = CustomWebhookNotificationBlock(
        name=NOTIFY_BLOCK,
        url="{{" + WEBHOOK_SECRET + "}}",
        secrets={WEBHOOK_SECRET: url},
        json_data={"text": "{{subject}}\n{{body}}"},
    )
    block.save(NOTIFY_BLOCK, overwrite=True)
    saved = CustomWebhookNotificationBlock.load(NOTIFY_BLOCK)
    return _ensure(failure_automation(saved._block_document_id))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.automations", description=__doc__)
    parser.add_argument(
        "--window",
        type=int,
        default=int(os.environ.get("TRICKFLOW_HEARTBEAT_WINDOW", DEFAULT_WINDOW)),
        help="seconds without a heartbeat after which a running flow run is Crashed",
    )
    parser.add_argument(
        "--notify-url",
        default=os.environ.get("TRICKFLOW_NOTIFY_URL", ""),
        help="webhook that hears of every failed run (Slack and the like); empty: none",
    )
    args = parser.parse_args(argv)
    automation = ensure(args.window)
    print(f"automation {automation.name!r}: flow runs silent for {args.window} s are Crashed")
    if args.notify_url:
        automation = ensure_notifications(args.notify_url)
        print(f"automation {automation.name!r}: failed runs are posted to the webhook")
    else:
        print("no TRICKFLOW_NOTIFY_URL: failed runs are shown in the UI only, not sent anywhere")
    return 0


if __name__ == "__main__":
    sys.exit(main())
