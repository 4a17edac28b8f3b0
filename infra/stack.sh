#!/usr/bin/env bash
# The local stack: Prefect server, two `process` work pools (CPU: ingestion, validation,
# evaluation, the gate; GPU: training) with a worker each, and an MLflow tracking server with its
# registry that serves the runs' artifacts itself. Everything binds to 127.0.0.1, and both servers
# ask for credentials: generated on the first start into $TRICKFLOW_HOME/credentials.env (0600),
# used by this script, the workers and their flow runs, the Prefect CLI (a profile in the stack's
# PREFECT_HOME) and the tests. A server this script did not start is never adopted.
#
#   infra/stack.sh start     start whatever is not running (idempotent), create the pools
#   infra/stack.sh deploy    register the deployments of prefect.yaml and the automations
#   infra/stack.sh stop      stop everything this script started, flow runs included, and check
#                            that it is gone
#   infra/stack.sh status
#   infra/stack.sh env       print the credentials as exports (eval "$(infra/stack.sh env)")
#   infra/stack.sh db        start only the database (TRICKFLOW_DB=postgres) and print the
#                            MLflow backend store's URL
#
# Where Prefect and MLflow keep their state, TRICKFLOW_DB:
#   sqlite (default)          SQLite files under $TRICKFLOW_HOME: one machine, `make demo`
#   postgres                  a PostgreSQL server this script starts, its data under
#                             $TRICKFLOW_HOME/postgres (TRICKFLOW_PG_DATA), on 127.0.0.1:TRICKFLOW_PG_PORT
#   postgresql://USER:PASSWORD@HOST:PORT
#                             an existing server: databases trickflow_prefect, trickflow_mlflow
#                             and trickflow_mlflow_auth on it (created when missing)
#
# TRICKFLOW_HOME (default .trickflow), PREFECT_PORT (4200), MLFLOW_PORT (5000), TRICKFLOW_POOL
# (the CPU pool, trickflow-cpu), TRICKFLOW_GPU_POOL (trickflow-gpu), TRICKFLOW_PG_PORT (5433)
# make a second, separate stack possible: the end-to-end tests use that. TRICKFLOW_GPU_WORKERS
# (1) is how many GPU workers start here and how many trainings may run at once.
set -euo pipefail
# Everything the stack writes (credentials, databases, logs, pid files, artifacts, and what its
# workers' flow runs write) is its owner's alone, from the first file on.
umask 077

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
STATE=$(realpath -m "${TRICKFLOW_HOME:-$REPO/.trickflow}")
PREFECT_PORT=${PREFECT_PORT:-4200}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
POOL=${TRICKFLOW_POOL:-trickflow-cpu}
GPU_POOL=${TRICKFLOW_GPU_POOL:-trickflow-gpu}
GPU_WORKERS=${TRICKFLOW_GPU_WORKERS:-1}
PG_PORT=${TRICKFLOW_PG_PORT:-5433}
PG_DATA=$(realpath -m "${TRICKFLOW_PG_DATA:-$STATE/postgres}")
BIN=${TRICKFLOW_BIN:-$REPO/.venv/bin}
RUN=$STATE/run
LOGS=$STATE/logs
# The database the stack was last started on (0600: an external server's URL holds its
# password) is the default: `make run` after `TRICKFLOW_DB=postgres make demo` finds it.
DB=${TRICKFLOW_DB:-$(cat "$RUN/db" 2>/dev/null || echo sqlite)}
# Debian installs PostgreSQL's server programs outside PATH.
if ! command -v initdb >/dev/null 2>&1; then
  for dir in /usr/lib/postgresql/*/bin; do [ -x "$dir/initdb" ] && PATH=$PATH:$dir; done
fi

export TRICKFLOW_HOME=$STATE
export PREFECT_HOME=$STATE/prefect
# prefect.toml names the checkout's profile (.trickflow/prefect/profiles.toml); this stack's, in
# its own home, is the one its workers, flow runs and this script's CLI calls must read.
export PREFECT_PROFILES_PATH=$PREFECT_HOME/profiles.toml
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
chmod 700 "$STATE"
if [ "$DB" = postgres ] && [ "$(id -u)" = 0 ] && [[ "$PG_DATA" == "$STATE"/* ]]; then
  chmod 711 "$STATE"  # PostgreSQL runs as `postgres`: it may pass through to its data, not list
fi

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
    "TRICKFLOW_REGISTRY_KEY": secrets.token_urlsafe(32),  # seals registered versions
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
    FORGET_AUTH=true
  fi
  database_urls
  rm -f "$STATE/mlflow/auth.ini" "$PREFECT_HOME/profiles.toml"  # created anew, as 0600
  (umask 077
   cat > "$STATE/mlflow/auth.ini" <<INI
[mlflow]
default_permission = NO_PERMISSIONS
database_uri = ${MLFLOW_AUTH_DB//%/%%}
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

# The databases. PostgreSQL will not run as root: as root, the local server runs as the
# `postgres` user (which must be able to reach $PG_DATA).
FORGET_AUTH=false
database_urls() {  # sets PREFECT_DB, MLFLOW_DB, MLFLOW_AUTH_DB for the servers
  case "$DB" in
    sqlite)
      PREFECT_DB=""  # Prefect's own default: $PREFECT_HOME/prefect.db
      MLFLOW_DB="sqlite:///$STATE/mlflow/mlflow.db"
      MLFLOW_AUTH_DB="sqlite:///$STATE/mlflow/auth.db" ;;
    postgres|postgresql://*|postgres://*)
      # URLs hold passwords: they travel by environment (readable by this user alone), never
      # as arguments (`ps` shows those to every local user), and are never echoed.
      if [ "$DB" = postgres ]; then
        PG_SERVER="postgresql://trickflow:$(pg_password)@127.0.0.1:$PG_PORT"
      else
        PG_SERVER=$DB
      fi
      local urls
      urls=$(PG_SERVER=$PG_SERVER "$BIN/python" - <<'PY'
import os, sys, urllib.parse as u
server = u.urlsplit(os.environ["PG_SERVER"])
if not server.hostname:
    sys.exit("TRICKFLOW_DB: give postgresql://USER:PASSWORD@HOST:PORT[?OPTIONS] (not repeated "
             "here: it may hold a password)")
for driver, database in (("postgresql", ""), ("postgresql+asyncpg", "trickflow_prefect"),
                         ("postgresql+psycopg2", "trickflow_mlflow"),
                         ("postgresql+psycopg2", "trickflow_mlflow_auth")):
    # The query string (sslmode=verify-full&sslrootcert=...) is kept for every database.
    print(u.urlunsplit((driver, server.netloc, "/" + database if database else "", server.query, "")))
PY
)
      { read -r PG_SERVER; read -r PREFECT_DB; read -r MLFLOW_DB; read -r MLFLOW_AUTH_DB; } <<<"$urls" ;;
    *) echo "TRICKFLOW_DB=${DB%%:*}…: use sqlite, postgres or postgresql://USER:PASSWORD@HOST:PORT" >&2
       exit 2 ;;
  esac
}

# The local server's passwords live beside its data (0600, the server's owner), not in
# credentials.env: new client credentials must not lock the stack out of its own database.
# `password` is the role the servers use (`trickflow`: may log in and make databases, nothing
# more); `admin_password` is the cluster's superuser (`trickflow_admin`), used only here to make
# that role: a leaked server password is then no shell as the cluster's owner (COPY ... TO
# PROGRAM needs a superuser).
pg_secret() {  # FILE: the password in $PG_DATA/FILE, made on first use
  local file=$PG_DATA/$1
  if [ ! -s "$file" ] && [ -f "$PG_DATA/data/PG_VERSION" ] && [ "$1" = password ]; then
    echo "$file is gone but the cluster in $PG_DATA/data is there: put the password" \
      "back, or remove $PG_DATA to start an empty database" >&2
    exit 1
  fi
  if [ ! -s "$file" ]; then
    mkdir -p "$PG_DATA"
    (umask 077; "$BIN/python" -c "import secrets; print(secrets.token_urlsafe(24))" > "$file")
    if [ "$(id -u)" = 0 ]; then chown postgres: "$PG_DATA" "$file"; fi
  fi
  cat "$file"
}
pg_password() { pg_secret password; }

as_db_owner() {  # COMMAND...: PostgreSQL's programs, with none of the stack's secrets
  # runuser passes the whole environment on (the clients' credentials and the registry key
  # among it): the database server gets a clean one.
  local clean=(env -i "PATH=$PATH" LANG=C.UTF-8)
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "${clean[@]}" "$@"; else "${clean[@]}" "$@"; fi
}

pg_running() { [ -f "$PG_DATA/data/PG_VERSION" ] && as_db_owner pg_ctl -D "$PG_DATA/data" status >/dev/null 2>&1; }

psql_server() {  # DATABASE SQL [PARAMETER]: run SQL on the server as PG_SERVER's user
  # The URL, the SQL and its parameter (a password) travel by environment, never as arguments.
  PG_SERVER=$PG_SERVER PG_DATABASE=$1 PG_SQL=$2 PG_PARAMETER=${3-} PG_HAS_PARAMETER=${3+1} \
    "$BIN/python" - <<'PY'
import os, urllib.parse as u
import psycopg2
server = u.urlsplit(os.environ["PG_SERVER"])
url = u.urlunsplit(("postgresql", server.netloc, "/" + os.environ["PG_DATABASE"], server.query, ""))
connection = psycopg2.connect(url, connect_timeout=10)
connection.autocommit = True
with connection.cursor() as cursor:
    parameters = (os.environ["PG_PARAMETER"],) if os.environ.get("PG_HAS_PARAMETER") else None
    cursor.execute(os.environ["PG_SQL"], parameters)
    if cursor.description:
        print("\n".join(str(row[0]) for row in cursor.fetchall()))
PY
}

ensure_role() {  # the servers' role on the stack's own cluster: no superuser
  if [ ! -s "$PG_DATA/admin_password" ]; then
    echo "note: this PostgreSQL cluster was made by an older stack.sh, whose role trickflow is" \
      "its superuser; to have a role that is not, stop the stack, move $PG_DATA away and start" \
      "again (Prefect's history and the MLflow registry then start empty)" >&2
    return 0
  fi
  # Called as `ensure_role || return 1`, where bash ignores `set -e`: every step says so itself.
  local server=$PG_SERVER found
  PG_SERVER="postgresql://trickflow_admin:$(pg_secret admin_password)@127.0.0.1:$PG_PORT"
  found=$(psql_server postgres "SELECT 1 FROM pg_roles WHERE rolname = 'trickflow'") || return 1
  if [ -z "$found" ]; then
    psql_server postgres "CREATE ROLE trickflow" >/dev/null || return 1
  fi
  psql_server postgres "ALTER ROLE trickflow LOGIN CREATEDB NOSUPERUSER NOCREATEROLE NOREPLICATION
    NOBYPASSRLS PASSWORD %s" "$(pg_password)" >/dev/null || return 1
  PG_SERVER=$server
}

start_db() {
  database_urls
  [ "$DB" = sqlite ] && return 0
  if [ "$DB" = postgres ]; then
    if pg_running; then
      echo "PostgreSQL already up on 127.0.0.1:$PG_PORT"
    elif "$BIN/python" -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 2)" "$PG_PORT" 2>/dev/null; then
      echo "port $PG_PORT answers but no PostgreSQL of this stack ($PG_DATA) runs: stop that server," \
        "or give this stack another port (TRICKFLOW_PG_PORT)" >&2
      return 1
    else
      if ! as_db_owner test -w "$PG_DATA"; then
        echo "$PG_DATA: the postgres user cannot write here (a parent folder is closed to it):" \
          "run as another user, or point TRICKFLOW_PG_DATA at a folder it can reach" >&2
        return 1
      fi
      if [ ! -f "$PG_DATA/data/PG_VERSION" ]; then
        echo "creating a PostgreSQL cluster in $PG_DATA/data"
        pg_secret admin_password >/dev/null && pg_password >/dev/null
        as_db_owner initdb -D "$PG_DATA/data" -U trickflow_admin --auth=scram-sha-256 \
          --pwfile="$PG_DATA/admin_password" -E UTF8 >"$LOGS/initdb.log" 2>&1 \
          || { cat "$LOGS/initdb.log" >&2; return 1; }
      fi
      echo "starting PostgreSQL on 127.0.0.1:$PG_PORT"
      as_db_owner pg_ctl -D "$PG_DATA/data" -l "$PG_DATA/postgres.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=''" >/dev/null \
        || { tail -20 "$PG_DATA/postgres.log" >&2; return 1; }
      PG_STARTED=true  # a failed start stops it again
      echo "$PG_PORT" > "$RUN/postgres.port"
      echo "$PG_DATA" > "$RUN/postgres.data"  # for `stop`, whatever its environment
    fi
    ensure_role || return 1
  fi
  local name
  if $FORGET_AUTH && [ "$DB" != postgres ] && [ -n "$(psql_server postgres \
      "SELECT 1 FROM pg_database WHERE datname = 'trickflow_mlflow_auth'")" ] \
      && [ -n "$(psql_server trickflow_mlflow_auth "SELECT 1 FROM information_schema.tables
                  WHERE table_name = 'users'")" ]; then
    # Another stack's MLflow users live there: new credentials would lock them out (MLflow sets
    # the admin password only when it makes the user), and dropping them is not ours to do.
    echo "the server of TRICKFLOW_DB has MLflow users already (trickflow_mlflow_auth), made" \
      "with other credentials: copy the credentials.env that goes with it to $CREDENTIALS" >&2
    rm -f "$CREDENTIALS"
    return 1
  fi
  for name in trickflow_prefect trickflow_mlflow trickflow_mlflow_auth; do
    if [ "$name" = trickflow_mlflow_auth ] && $FORGET_AUTH && [ "$DB" = postgres ]; then
      psql_server postgres "DROP DATABASE IF EXISTS $name" >/dev/null  # this stack's own server
    fi
    if [ -z "$(psql_server postgres "SELECT 1 FROM pg_database WHERE datname = '$name'")" ]; then
      psql_server postgres "CREATE DATABASE $name" >/dev/null
    fi
  done
}

stop_db() {
  local data=$PG_DATA
  [ -s "$RUN/postgres.data" ] && data=$(cat "$RUN/postgres.data")
  [ -f "$data/data/PG_VERSION" ] || return 0
  if as_db_owner pg_ctl -D "$data/data" status >/dev/null 2>&1; then
    as_db_owner pg_ctl -D "$data/data" -m fast -w -t 60 stop >/dev/null || return 1
    echo "stopped PostgreSQL"
  fi
  rm -f "$RUN/postgres.port" "$RUN/postgres.data"
}

# The stack's own processes (infra/processes.py): each pid file records the pid, its start time,
# the boot and this stack's home, written once the program runs; a process is ours only while
# all of them match, and nothing else is ever signalled (a recycled pid is left alone).
PROCESSES=("$BIN/python" "$REPO/infra/processes.py")
alive() { "${PROCESSES[@]}" alive "$RUN" "$1"; }

healthy() {  # URL: true once it answers 200
  "$BIN/python" - "$1" <<'PY'
import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}

# Started by this call of `start`: stopped again if the start fails, so nothing it began outlives
# it unwatched (a server taken for dead while it was still starting used to run on for hours).
LAUNCHED=()
PG_STARTED=false
wait_healthy() {  # NAME URL PORT SECONDS: ours, answering 200, and the listener on PORT is ours
  local waited=0
  while [ "$waited" -lt "$4" ]; do
    # Only credentials-free requests until the socket on the port is known to be our server's.
    if "${PROCESSES[@]}" listening "$RUN" "$1" "$3" && healthy "$2"; then return 0; fi
    if ! alive "$1"; then
      echo "$1 exited; see $LOGS/$1.log" >&2; tail -20 "$LOGS/$1.log" >&2; return 1
    fi
    sleep 1; waited=$((waited + 1))
  done
  echo "$1 still running but not answering on port $3 after $4 s; see $LOGS/$1.log" >&2
  return 1
}

launch() {  # NAME COMMAND...: a session of its own, so that stopping reaches its children too
  local name=$1; shift
  "${PROCESSES[@]}" launch "$RUN" "$name" "$LOGS/$name.log" -- "$@" >/dev/null
  LAUNCHED+=("$name")
}

undo_launches() {  # on a failed start: stop what this call started, newest first
  local status=$? i
  trap - EXIT
  if [ "$status" -ne 0 ] && [ "${#LAUNCHED[@]}" -gt 0 ]; then
    echo "start failed: stopping what it started (${LAUNCHED[*]})" >&2
    for ((i = ${#LAUNCHED[@]} - 1; i >= 0; i--)); do stop_one "${LAUNCHED[$i]}" >&2 || true; done
  fi
  if [ "$status" -ne 0 ] && $PG_STARTED; then
    echo "start failed: stopping the PostgreSQL it started" >&2
    stop_db >&2 || true
  fi
  exit "$status"
}

taken() {  # NAME URL PORT: a server answers on a port this stack has no live process for
  echo "port $3 answers ($2) but $1 was not started by this stack ($RUN has no live pid for it):" \
    "stop that server, or give this stack other ports (PREFECT_PORT, MLFLOW_PORT)" >&2
  return 1
}

start() {
  trap undo_launches EXIT
  # A home made before the umask above may hold files others can read: close the stack's own.
  chmod -R go-rwx "$RUN" "$LOGS" "$PREFECT_HOME" "$STATE/mlflow" 2>/dev/null || true
  credentials create
  if [ -s "$RUN/db" ] && [ "$(cat "$RUN/db")" != "$DB" ] \
     && { alive prefect-server || alive mlflow-server; }; then
    echo "this stack runs on $(sed 's|//.*@|//…@|' "$RUN/db"), not TRICKFLOW_DB=$(sed 's|//.*@|//…@|' <<<"$DB"):" \
      "\`$0 stop\` first" >&2
    return 1
  fi
  if $FRESH_CREDENTIALS && { alive prefect-server || alive mlflow-server; }; then
    echo "new credentials: restarting the servers with authentication"
    stop
  fi
  start_db
  (umask 077; echo "$DB" > "$RUN/db")
  if alive prefect-server; then
    echo "Prefect server already up at http://127.0.0.1:$PREFECT_PORT"
  elif healthy "$PREFECT_API_URL/health"; then
    taken prefect-server "$PREFECT_API_URL/health" "$PREFECT_PORT"
  else
    echo "starting the Prefect server on 127.0.0.1:$PREFECT_PORT (database: ${DB%%://*})"
    export PREFECT_SERVER_API_AUTH_STRING
    [ -z "$PREFECT_DB" ] || export PREFECT_SERVER_DATABASE_CONNECTION_URL=$PREFECT_DB
    # The registry key seals models: only the clients that register and load them hold it.
    launch prefect-server env -u TRICKFLOW_REGISTRY_KEY -u MLFLOW_TRACKING_USERNAME \
      -u MLFLOW_TRACKING_PASSWORD "$BIN/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT"
    export -n PREFECT_SERVER_API_AUTH_STRING PREFECT_SERVER_DATABASE_CONNECTION_URL
    wait_healthy prefect-server "$PREFECT_API_URL/health" "$PREFECT_PORT" 300
  fi
  if alive mlflow-server; then
    echo "MLflow server already up at $MLFLOW_TRACKING_URI"
  elif healthy "$MLFLOW_TRACKING_URI/health"; then
    taken mlflow-server "$MLFLOW_TRACKING_URI/health" "$MLFLOW_PORT"
  else
    echo "starting the MLflow server on 127.0.0.1:$MLFLOW_PORT (basic authentication, database:" \
      "${DB%%://*}, artifacts served from $STATE/mlflow/artifacts)"
    # Job execution (huey consumers, for MLflow's GenAI jobs) is not used here: seven processes less.
    # The server stores and serves the artifacts itself: clients upload and download them over
    # HTTP with their credentials, and need nothing of the server's disk (or of an object store).
    # The store's URL goes in the environment, not the command line (`ps` shows that to anyone).
    export MLFLOW_FLASK_SERVER_SECRET_KEY MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
      MLFLOW_AUTH_CONFIG_PATH="$STATE/mlflow/auth.ini" MLFLOW_BACKEND_STORE_URI="$MLFLOW_DB"
    launch mlflow-server env -u TRICKFLOW_REGISTRY_KEY -u PREFECT_API_AUTH_STRING \
      "$BIN/mlflow" server --app-name basic-auth --host 127.0.0.1 --port "$MLFLOW_PORT" \
      --workers 1 --serve-artifacts --artifacts-destination "$STATE/mlflow/artifacts"
    export -n MLFLOW_FLASK_SERVER_SECRET_KEY MLFLOW_SERVER_ENABLE_JOB_EXECUTION \
      MLFLOW_AUTH_CONFIG_PATH MLFLOW_BACKEND_STORE_URI
    wait_healthy mlflow-server "$MLFLOW_TRACKING_URI/health" "$MLFLOW_PORT" 300
  fi
  local pool
  for pool in "$POOL" "$GPU_POOL"; do
    if ! "$BIN/prefect" work-pool inspect "$pool" >/dev/null 2>&1; then
      "$BIN/prefect" work-pool create "$pool" --type process >/dev/null
      echo "created work pool $pool"
    fi
  done
  if alive worker; then
    echo "CPU worker already running"
  else
    echo "starting a worker on pool $POOL"
    launch worker "$BIN/prefect" worker start --pool "$POOL" --type process --name "cpu-$(hostname)-$PREFECT_PORT"
  fi
  local i
  for i in $(seq "$GPU_WORKERS"); do
    if alive "gpu-worker-$i"; then
      echo "GPU worker $i already running"
    else
      echo "starting GPU worker $i on pool $GPU_POOL"
      launch "gpu-worker-$i" "$BIN/prefect" worker start --pool "$GPU_POOL" --type process \
        --name "gpu-$i-$(hostname)-$PREFECT_PORT"
    fi
  done
}

deploy() {
  credentials
  TRICKFLOW_POOL=$POOL TRICKFLOW_GPU_POOL=$GPU_POOL TRICKFLOW_GPU_WORKERS=$GPU_WORKERS \
    "$BIN/prefect" --no-prompt deploy --all
  "$BIN/python" -m flows.limits --trainings "$GPU_WORKERS"
  "$BIN/python" -m flows.automations --window "$TRICKFLOW_HEARTBEAT_WINDOW"
}

stop_one() {  # NAME: TERM its session, wait, KILL if needed, and check that it is gone
  "${PROCESSES[@]}" stop "$RUN" "$1"
}

stop_flow_runs() {  # a flow run left running would keep training (infra/processes.py)
  "${PROCESSES[@]}" stop-flow-runs
}

stop() {
  local status=0
  local pidfile
  for pidfile in "$RUN"/worker.pid "$RUN"/gpu-worker-*.pid; do  # first: they start flow runs
    [ -f "$pidfile" ] || continue
    name=$(basename "$pidfile" .pid)
    stop_one "$name" || status=1
  done
  stop_flow_runs || status=1
  for name in mlflow-server prefect-server; do stop_one "$name" || status=1; done
  stop_db || status=1
  return $status
}

status() {
  local names=(prefect-server mlflow-server worker)
  for i in $(seq "$GPU_WORKERS"); do names+=("gpu-worker-$i"); done
  for name in "${names[@]}"; do
    if alive "$name"; then echo "$name: running (pid $("${PROCESSES[@]}" pid "$RUN" "$name"))"
    else echo "$name: stopped"; fi
  done
  if pg_running; then echo "postgres: running (127.0.0.1:$(cat "$RUN/postgres.port" 2>/dev/null))"; fi
  echo "Prefect UI: http://127.0.0.1:$PREFECT_PORT   MLflow UI: $MLFLOW_TRACKING_URI"
}

case "${1:-}" in
  start) start; trap - EXIT ;;
  deploy) deploy ;;
  stop) stop ;;
  status) status ;;
  db)
    credentials create
    start_db
    echo "$MLFLOW_DB" ;;
  env)
    credentials
    for name in $CLIENT_SECRETS MLFLOW_TRACKING_URI PREFECT_API_URL PREFECT_HOME \
        PREFECT_PROFILES_PATH; do
      printf 'export %s=%q\n' "$name" "${!name}"
    done ;;
  *) echo "usage: $0 start|deploy|stop|status|env|db" >&2; exit 2 ;;
esac
