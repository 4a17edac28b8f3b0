#!/usr/bin/env bash
# `make demo`: make the digits data, start the stack, deploy, run train-imagenet/demo, summarise.
set -euo pipefail
umask 077  # the demo's data and logs are the stack owner's alone, like the rest of its home
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
STATE=$(realpath -m "${TRICKFLOW_HOME:-$REPO/.trickflow}")
BIN=$REPO/.venv/bin
if [ ! -f "$STATE/demo-data/LOC_val_solution.csv" ]; then
  "$BIN/python" -m components.demo_data --output "$STATE/demo-data"
fi
infra/stack.sh start
infra/stack.sh deploy >"$STATE/logs/deploy.log" 2>&1 || { cat "$STATE/logs/deploy.log"; exit 1; }
export PREFECT_API_URL=http://127.0.0.1:${PREFECT_PORT:-4200}/api PREFECT_HOME=$STATE/prefect \
  PREFECT_PROFILES_PATH=$STATE/prefect/profiles.toml
echo "running train-imagenet/demo (follow it at http://127.0.0.1:${PREFECT_PORT:-4200}/runs)"
set +e
"$BIN/python" -m flows.follow train-imagenet/demo -p data_dir="$STATE/demo-data" \
  -p work_dir="$STATE/work" "$@" 2>&1 | tee "$STATE/logs/demo-run.log"
status=${PIPESTATUS[0]}
set -e
echo "Prefect UI: http://127.0.0.1:${PREFECT_PORT:-4200}/runs"
echo "MLflow UI:  http://127.0.0.1:${MLFLOW_PORT:-5000} (runs with their curves; models)"
echo "TensorBoard: make tensorboard"
echo "The stack stays up for inspection; \`make stop\` stops it."
exit "$status"
