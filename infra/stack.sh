#!/usr/bin/env bash
# The local stack: Prefect server (SQLite, project-local home), a `process` work pool and worker,
# and an MLflow tracking server with its registry. Everything binds to 127.0.0.1.
#
#   infra/stack.sh start     start whatever is not running (idempotent), create the pool
#   infra/stack.sh deploy    register the deployments of prefect.yaml
#   infra/stack.sh stop      stop everything this script started, and check that it is gone
#   infra/stack.sh status
#
# TRICKFLOW_HOME (default .trickflow), PREFECT_PORT (4200), MLFLOW_PORT (5000) and TRICKFLOW_POOL
# (trickflow-local) make a second, separate stack possible: the end-to-end test uses that.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
STATE=$(realpath -m "${TRICKFLOW_HOME:-$REPO/.trickflow}")
PREFECT_PORT=${PREFECT_PORT:-4200}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
POOL=${TRICKFLOW_POOL:-trickflow-local}
BIN=${TRICKFLOW_BIN:-$REPO/.venv/bin}
RUN=$STATE/run
LOGS=$STATE/logs

export TRICKFLOW_HOME=$STATE
export PREFECT_HOME=$STATE/prefect
export PREFECT_API_URL=http://127.0.0.1:$PREFECT_PORT/api
export PREFECT_SERVER_API_HOST=127.0.0.1
export PREFECT_SERVER_API_PORT=$PREFECT_PORT
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT
export TRICKFLOW_MLFLOW_UI=$MLFLOW_TRACKING_URI
export TRICKFLOW_REPO=$REPO

mkdir -p "$RUN" "$LOGS" "$PREFECT_HOME" "$STATE/mlflow/artifacts"

# A pid file left by a reboot may name some other process by now: check it is still ours.
alive() {
  [ -f "$RUN/$1.pid" ] || return 1
  local pid
  pid=$(cat "$RUN/$1.pid")
  kill -0 "$pid" 2>/dev/null && ps -o args= -p "$pid" | grep -qE 'prefect|mlflow'
}

healthy() {  # URL: true once it answers 200
  "$BIN/python" - "$1" <<'PY'
import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}

wait_healthy() {  # NAME URL SECONDS
  for _ in $(seq "$3"); do
    healthy "$2" && return 0
    alive "$1" || { echo "$1 exited; see $LOGS/$1.log" >&2; tail -20 "$LOGS/$1.log" >&2; return 1; }
    sleep 1
  done
  echo "$1 not healthy after $3 s; see $LOGS/$1.log" >&2
  return 1
}

launch() {  # NAME COMMAND...: a new session, so that stopping reaches its children too
  local name=$1; shift
  setsid "$@" >>"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN/$name.pid"
}

start() {
  if healthy "$PREFECT_API_URL/health"; then
    echo "Prefect server already up at http://127.0.0.1:$PREFECT_PORT"
  else
    echo "starting the Prefect server on 127.0.0.1:$PREFECT_PORT"
    launch prefect-server "$BIN/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT"
    wait_healthy prefect-server "$PREFECT_API_URL/health" 90
  fi
  if healthy "$MLFLOW_TRACKING_URI/health"; then
    echo "MLflow server already up at $MLFLOW_TRACKING_URI"
  else
    echo "starting the MLflow server on 127.0.0.1:$MLFLOW_PORT"
    # Job execution (huey consumers, for MLflow's GenAI jobs) is not used here: seven processes less.
    launch mlflow-server env MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false "$BIN/mlflow" server --host 127.0.0.1 --port "$MLFLOW_PORT" \
      --workers 1 --backend-store-uri "sqlite:///$STATE/mlflow/mlflow.db" \
      --default-artifact-root "file://$STATE/mlflow/artifacts" --no-serve-artifacts
    wait_healthy mlflow-server "$MLFLOW_TRACKING_URI/health" 120
  fi
  if ! "$BIN/prefect" work-pool inspect "$POOL" >/dev/null 2>&1; then
    "$BIN/prefect" work-pool create "$POOL" --type process >/dev/null
    echo "created work pool $POOL"
  fi
  if alive worker; then
    echo "worker already running"
  else
    echo "starting a worker on pool $POOL"
    launch worker "$BIN/prefect" worker start --pool "$POOL" --type process
  fi
}

deploy() {
  TRICKFLOW_POOL=$POOL "$BIN/prefect" --no-prompt deploy --all
}

gone() {  # PID: exited (a zombie waiting for init to reap it counts as gone)
  ! kill -0 "$1" 2>/dev/null || [[ "$(ps -o stat= -p "$1" 2>/dev/null)" == Z* ]]
}

stop_one() {  # NAME: TERM the session, wait, KILL if needed, and check that it is gone
  local name=$1 pid
  [ -f "$RUN/$name.pid" ] || return 0
  pid=$(cat "$RUN/$name.pid")
  if ! alive "$name"; then rm -f "$RUN/$name.pid"; return 0; fi  # stale: not ours to signal
  if ! gone "$pid"; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 20); do gone "$pid" && break; sleep 0.5; done
    # A worker can ignore the first SIGTERM while it winds down: insist.
    if ! gone "$pid"; then
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 20); do gone "$pid" && break; sleep 0.5; done
    fi
    if ! gone "$pid"; then echo "$name (pid $pid) would not stop" >&2; return 1; fi
    echo "stopped $name"
  fi
  # Stragglers of the same session (server sub-processes, flow runs).
  pkill -KILL -s "$pid" 2>/dev/null || true
  rm -f "$RUN/$name.pid"
}

stop() {
  local status=0
  for name in worker mlflow-server prefect-server; do stop_one "$name" || status=1; done
  return $status
}

status() {
  for name in prefect-server mlflow-server worker; do
    if alive "$name"; then echo "$name: running (pid $(cat "$RUN/$name.pid"))"; else echo "$name: stopped"; fi
  done
  echo "Prefect UI: http://127.0.0.1:$PREFECT_PORT   MLflow UI: $MLFLOW_TRACKING_URI"
}

case "${1:-}" in
  start) start ;;
  deploy) deploy ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|deploy|stop|status" >&2; exit 2 ;;
esac
