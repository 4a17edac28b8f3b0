"""The training limit: how many `train-model` runs may train at once, one per GPU worker.

    python -m flows.limits [--deployment train-model/gpu] --trainings N

prefect.yaml cannot take the limit from the environment (a deployment's fields are checked before
its templates are filled), so `infra/stack.sh deploy` sets it here, to TRICKFLOW_GPU_WORKERS, after
deploying. Runs past the limit wait as AwaitingConcurrencySlot, each until a training ends; the
stages of their parent runs before training are not held back.
"""

from __future__ import annotations

import argparse
import sys

from prefect import get_client
from prefect.client.schemas.actions import DeploymentUpdate

TRAINING_DEPLOYMENT = "train-model/gpu"


def set_training_limit(trainings: int, deployment: str = TRAINING_DEPLOYMENT) -> int:
    """Sets the deployment's concurrency limit; returns what the server has now."""
    if trainings < 1:
        raise ValueError(f"--trainings {trainings}: at least one training must be able to run")
    with get_client(sync_client=True) as client:
        found = client.read_deployment_by_name(deployment)
        client.update_deployment(found.id, DeploymentUpdate(concurrency_limit=trainings))
        return client.read_deployment(found.id).global_concurrency_limit.limit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.limits", description=__doc__)
    parser.add_argument("--deployment", default=TRAINING_DEPLOYMENT)
    parser.add_argument("--trainings", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        limit = set_training_limit(args.trainings, args.deployment)
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    print(f"{args.deployment}: at most {limit} training(s) at once")
    return 0


if __name__ == "__main__":
    sys.exit(main())
