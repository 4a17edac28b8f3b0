#!/usr/bin/env bash
# `make demo`: make the digits data, start the stack, deploy, run train-imagenet/demo, summarise.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
STATE=$(realpath -m "${TRICKFLOW_HOME:-$REPO/.trickflow}")
BIN=$REPO/.venv/bin
if [ ! -f "$STATE/demo-data/LOC_val_solution.csv" ]; then
  "$BIN/python" -m components.demo_data --output "$STATE/demo-data"
fi
infra/stack.sh start
infra/stack.sh deploy >"$STATE/logs/deploy.log" 2>&1 || { cat "$STATE/logs/deploy.log"; exit 1; }
export PREFECT_API_URL=http://127.0.0.1:${PREFECT_PORT:-4200}/api PREFECT_HOME=$STATE/prefect
echo "running train-imagenet/demo (follow it at http://127.0.0.1:${PREFECT_PORT:-4200}/runs)"
set +e
"$BIN/prefect" deployment run train-imagenet/demo -p data_dir="$STATE/demo-data" \
  -p work_dir="$STATE/work" --watch "$@" 2>&1 | tee "$STATE/logs/demo-run.log"
status=${PIPESTATUS[0]}
set -e
run_id=$(grep -oE 'UUID: [0-9a-f-]{36}' "$STATE/logs/demo-run.log" | head -1 | cut -d' ' -f2 || true)
"$BIN/python" - "$STATE/work/runs/$run_id/report.json" "${PREFECT_PORT:-4200}" "${MLFLOW_PORT:-5000}" <<'PY'
import json, sys
path, prefect_port, mlflow_port = sys.argv[1:]
try:
    report = json.load(open(path))
except OSError:
    sys.exit(f"no report at {path}: the run failed before writing it")
ev, gate, reg = report.get("evaluate") or {}, report.get("gate") or {}, report["registry"]
print()
print(f"top-1:      {ev.get('top1', float('nan')):.4f} (top-5 {ev.get('top5', float('nan')):.4f})")
print(f"gate:       {'passed' if gate.get('passed') else 'failed'}: {gate.get('reason', 'not reached')}")
print(f"registered: {reg['model_name']} version {reg['version']}" + (" (@champion)" if reg["version"] else ""))
print(f"report:     {path}")
print(f"Prefect UI: http://127.0.0.1:{prefect_port}/runs/flow-run/{report['flow_run_id']}")
print(f"MLflow UI:  http://127.0.0.1:{mlflow_port}/#/models/{reg['model_name']}")
print("The stack stays up for inspection; `make stop` stops it.")
PY
exit "$status"
