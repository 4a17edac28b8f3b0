#!/usr/bin/env bash
# The local stack: Prefect server (SQLite, project-local home), a `process` work pool and worker,
# and an MLflow tracking server with its registry. Everything binds to 127.0.0.1, and both servers
# ask for credentials: generated on the first start into $TRICKFLOW_HOME/credentials.env (0600),
# used by this script, the worker and its flow runs, the Prefect CLI (a profile in the stack's
# PREFECT_HOME) and the tests. A server this script did not start is never adopted.
#
#   infra/stack.sh start     start whatever is not running (idempotent), create the pool
#   infra/stack.sh deploy    register the deployments of prefect.yaml and the automations
#   infra/stack.sh stop      stop everything this script started, flow runs included, and check
#                            that it is gone
#   infra/stack.sh status
#   infra/stack.sh env       print the credentials as exports (eval "$(infra/stack.sh env)")
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
# Flow runs send a heartbeat this often; the automation of `deploy` crashes a run that goes
# TRICKFLOW_HEARTBEAT_WINDOW seconds without one (its process died).
export PREFECT_FLOWS_HEARTBEAT_FREQUENCY=${TRICKFLOW_HEARTBEAT_SECONDS:-30}
export TRICKFLOW_HEARTBEAT_WINDOW=${TRICKFLOW_HEARTBEAT_WINDOW:-120}
CREDENTIALS=$STATE/credentials.env

mkdir -p "$RUN" "$LOGS" "$PREFECT_HOME" "$STATE/mlflow/artifacts"

# Credentials: made once (random, 0600) by `credentials`, which start, deploy and env call; stop
# and status need none. The Prefect CLI run from the checkout finds them in the stack's profile;
# MLflow clients read MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD
# (`eval "$(infra/stack.sh env)"`). Only what clients need is exported (to the worker and its
# flow runs): the servers' own secrets go to the servers alone.
FRESH_CREDENTIALS=false
CLIENT_SECRETS="PREFECT_API_AUTH_STRING MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD TRICKFLOW_REGISTRY_KEY"
credentials() {  # [create]: only `start` makes them; the others need a started stack's
  if [ ! -s "$CREDENTIALS" ]; then
    [ "${1:-}" = create ] || { echo "no credentials in $CREDENTIALS: run $0 start first" >&2; exit 1; }
    FRESH_CREDENTIALS=true
  fi
  # Any missing entry is added (random, URL-safe); existing ones are kept.
  (umask 077; "$BIN/python" - "$CREDENTIALS" <<'PY'
import os, secrets, sys
path = sys.argv[1]
have = {}
if os.path.exists(path):
    for line in open(path):
        key, _, value = line.strip().partition("=")
        if key:
            have[key] = value
prefect = have.get("PREFECT_API_AUTH_STRING") or f"trickflow:{secrets.token_urlsafe(24)}"
wanted = {
    "PREFECT_API_AUTH_STRING": prefect,
    "PREFECT_SERVER_API_AUTH_STRING": prefect,
    "MLFLOW_TRACKING_USERNAME": "admin",
    "MLFLOW_TRACKING_PASSWORD": secrets.token_urlsafe(24),
    "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(32),  # the auth app's CSRF key
    "TRICKFLOW_REGISTRY_KEY": secrets.token_urlsafe(32),  # seals the servables' digests
}
merged = {**wanted, **have}
if merged != have:
    with open(path + ".tmp", "w") as handle:
        handle.write("".join(f"{k}={v}\n" for k, v in merged.items()))
    os.replace(path + ".tmp", path)
PY
  )
  chmod 600 "$CREDENTIALS"
  . "$CREDENTIALS"
  # shellcheck disable=SC2086
  export $CLIENT_SECRETS
  if $FRESH_CREDENTIALS; then
    # MLflow sets the admin password only when it creates the user: users made with lost
    # credentials would lock every client out.
    rm -f "$STATE/mlflow/auth.db"
  fi
  rm -f "$STATE/mlflow/auth.ini" "$PREFECT_HOME/profiles.toml"  # created anew, as 0600
  (umask 077
   cat > "$STATE/mlflow/auth.ini" <<INI
[mlflow]
default_permission = NO_PERMISSIONS
database_uri = sqlite:///$STATE/mlflow/auth.db
admin_username = $MLFLOW_TRACKING_USERNAME
admin_password = $MLFLOW_TRACKING_PASSWORD
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
grant_default_workspace_access = false
auth_cache_ttl_seconds = 60
INI
   cat > "$PREFECT_HOME/profiles.toml" <<TOML
# Written by infra/stack.sh: the Prefect CLI run from the checkout talks to this stack.
active = "trickflow"

[profiles.trickflow]
PREFECT_API_URL = "$PREFECT_API_URL"
PREFECT_API_AUTH_STRING = "$PREFECT_API_AUTH_STRING"
TOML
  )
}

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

taken() {  # NAME URL PORT: a server answers on a port this stack has no live process for
  echo "port $3 answers ($2) but $1 was not started by this stack ($RUN has no live pid for it):" \
    "stop that server, or give this stack other ports (PREFECT_PORT, MLFLOW_PORT)" >&2
  return 1
}

start() {
  credentials create
  if $FRESH_CREDENTIALS && { alive prefect-server || alive mlflow-server; }; then
    echo "new credentials: restarting the servers with authentication"
    stop
  fi
  if alive prefect-server; then
    echo "Prefect server already up at http://127.0.0.1:$PREFECT_PORT"
  elif healthy "$PREFECT_API_URL/health"; then
    taken prefect-server "$PREFECT_API_URL/health" "$PREFECT_PORT"
  else
    echo "starting the Prefect server on 127.0.0.1:$PREFECT_PORT"
    (export PREFECT_SERVER_API_AUTH_STRING
     launch prefect-server "$BIN/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT")
    wait_healthy prefect-server "$PREFECT_API_URL/health" 90
  fi
  if alive mlflow-server; then
    echo "MLflow server already up at $MLFLOW_TRACKING_URI"
  elif healthy "$MLFLOW_TRACKING_URI/health"; then
    taken mlflow-server "$MLFLOW_TRACKING_URI/health" "$MLFLOW_PORT"
  else
    echo "starting the MLflow server on 127.0.0.1:$MLFLOW_PORT (basic authentication)"
    # Job execution (huey consumers, for MLflow's GenAI jobs) is not used here: seven processes less.
    (export MLFLOW_FLASK_SERVER_SECRET_KEY MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
       MLFLOW_AUTH_CONFIG_PATH="$STATE/mlflow/auth.ini"
     launch mlflow-server "$BIN/mlflow" server --app-name basic-auth --host 127.0.0.1 --port "$MLFLOW_PORT" \
      --workers 1 --backend-store-uri "sqlite:///$STATE/mlflow/mlflow.db" \
      --default-artifact-root "file://$STATE/mlflow/artifacts" --no-serve-artifacts)
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
  credentials
  TRICKFLOW_POOL=$POOL "$BIN/prefect" --no-prompt deploy --all
  "$BIN/python" -m flows.automations --window "$TRICKFLOW_HEARTBEAT_WINDOW"
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

flow_runs() {  # pids of flow-run processes of this stack: the worker starts each in a session of
  # its own, so stopping the worker's session misses them; their environment names this stack.
  local environ pid
  for environ in /proc/[0-9]*/environ; do
    pid=${environ#/proc/}; pid=${pid%/environ}
    [ "$pid" = "$$" ] && continue
    # grep reads the file itself: in a pipe, `grep -q` stopping early would SIGPIPE the writer
    # and, under pipefail, skip the process.
    grep -zqxF "TRICKFLOW_HOME=$STATE" "$environ" 2>/dev/null || continue
    grep -zq '^PREFECT__FLOW_RUN_ID=' "$environ" 2>/dev/null && echo "$pid"
  done
  return 0
}

stop_flow_runs() {  # TERM, wait, KILL, and check: a flow run left running would keep training
  local pids pid
  pids=$(flow_runs)
  [ -n "$pids" ] || return 0
  for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 20); do
    pids=$(for pid in $pids; do gone "$pid" || echo "$pid"; done)
    [ -n "$pids" ] || break
    sleep 0.5
  done
  for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
  sleep 0.5
  pids=$(for pid in $pids; do gone "$pid" || echo "$pid"; done)
  if [ -n "$pids" ]; then echo "flow runs (pids $pids) would not stop" >&2; return 1; fi
  echo "stopped the flow runs the worker had started"
}

stop() {
  local status=0
  stop_one worker || status=1  # first: it would start new flow runs
  stop_flow_runs || status=1
  for name in mlflow-server prefect-server; do stop_one "$name" || status=1; done
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
  env)
    credentials
    for name in $CLIENT_SECRETS; do echo "export $name=${!name}"; done
    echo "export MLFLOW_TRACKING_URI=$MLFLOW_TRACKING_URI" ;;
  *) echo "usage: $0 start|deploy|stop|status|env" >&2; exit 2 ;;
esac
