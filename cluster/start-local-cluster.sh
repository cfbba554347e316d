#!/usr/bin/env bash
# Start (or stop) a Dask cluster of plain OS processes for dask_rec: one `dask scheduler`, N ordinary
# `dask worker`s and one (or more) big-memory workers advertising the `bigmem` resource, on which
# dask_rec places its factorization task.
#
#   cluster/start-local-cluster.sh [OPTIONS]           start; prints the scheduler address on stdout
#   cluster/start-local-cluster.sh --stop [--dir DIR]  stop every process started in DIR
#   cluster/start-local-cluster.sh --status [--dir DIR]
#   cluster/start-local-cluster.sh --add [OPTIONS]     start more workers for the scheduler running in DIR
#
# Every option also has an environment variable (given in brackets); flags win over variables.
#
#   --dir DIR                 run directory: pids/, logs/, work/, scheduler.json, address
#                             [DASK_REC_CLUSTER_DIR, default cluster/run beside this script]
#   --host HOST               address every process listens on and advertises [DASK_REC_HOST, 127.0.0.1]
#   --port PORT               scheduler port, 0 for any free port [DASK_REC_SCHEDULER_PORT, 8786]
#   --dashboard-port PORT     scheduler dashboard port, 0 for any free port, 'none' for no dashboard
#                             (needs bokeh) [DASK_REC_DASHBOARD_PORT, 8787]
#   --workers N               ordinary workers [DASK_REC_WORKERS, 2]
#   --memory-limit SIZE       memory limit of each ordinary worker [DASK_REC_MEMORY_LIMIT, 2GiB]
#   --nthreads N              threads per worker [DASK_REC_NTHREADS, 1]
#   --bigmem-workers N        workers started with --resources bigmem=1 [DASK_REC_BIGMEM_WORKERS, 1]
#   --bigmem-memory-limit SIZE  memory limit of each bigmem worker [DASK_REC_BIGMEM_MEMORY_LIMIT, 8GiB]
#   --no-nanny                run workers without a nanny (a killed worker is then not restarted)
#                             [DASK_REC_NO_NANNY=1]
#   --death-timeout SECONDS   workers exit when the scheduler is gone this long [DASK_REC_DEATH_TIMEOUT, 60]
#   --idle-timeout DURATION   the scheduler exits after this long without clients or tasks, e.g. 1h
#                             (default: never) [DASK_REC_IDLE_TIMEOUT]
#   --timeout SECONDS         how long to wait for the scheduler and the workers [DASK_REC_START_TIMEOUT, 60]
#   --tls-dir DIR             TLS on, with the files written by cluster/tls/make-certs.sh in DIR:
#                             ca.pem, scheduler.pem, scheduler-key.pem, worker.pem, worker-key.pem
#                             [DASK_REC_TLS_DIR]
#   --tls-ca-file FILE        TLS on, with this CA [DASK_REC_TLS_CA_FILE]
#   --tls-cert FILE           scheduler's (and, without --tls-worker-cert, workers') certificate
#                             [DASK_REC_TLS_CERT]
#   --tls-key FILE            its private key [DASK_REC_TLS_KEY]
#   --tls-worker-cert FILE    workers' certificate [DASK_REC_TLS_WORKER_CERT]
#   --tls-worker-key FILE     its private key [DASK_REC_TLS_WORKER_KEY]
#   --dask PATH               the `dask` command to run [DASK_REC_DASK, default: `dask` on PATH]
#   -h, --help
#
# Other DASK_* environment variables (e.g. DASK_DISTRIBUTED__WORKER__MEMORY__TERMINATE=False)
# reach every process as usual. Logs are in DIR/logs/NAME.log, PIDs in DIR/pids/NAME.pid; each
# process is started in its own session (setsid), so that its PID is also its process group and
# --stop ends a nanny together with its worker process.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
die() { echo "start-local-cluster: error: $*" >&2; exit 2; }
say() { echo "start-local-cluster: $*" >&2; }

MODE=start
DIR="${DASK_REC_CLUSTER_DIR:-$(cd "$(dirname "$0")" && pwd -P)/run}"
HOST="${DASK_REC_HOST:-127.0.0.1}"
PORT="${DASK_REC_SCHEDULER_PORT:-8786}"
DASHBOARD_PORT="${DASK_REC_DASHBOARD_PORT:-8787}"
WORKERS="${DASK_REC_WORKERS:-2}"
MEMORY_LIMIT="${DASK_REC_MEMORY_LIMIT:-2GiB}"
NTHREADS="${DASK_REC_NTHREADS:-1}"
BIGMEM_WORKERS="${DASK_REC_BIGMEM_WORKERS:-1}"
BIGMEM_MEMORY_LIMIT="${DASK_REC_BIGMEM_MEMORY_LIMIT:-8GiB}"
NO_NANNY="${DASK_REC_NO_NANNY:-0}"
DEATH_TIMEOUT="${DASK_REC_DEATH_TIMEOUT:-60}"
IDLE_TIMEOUT="${DASK_REC_IDLE_TIMEOUT:-}"
TIMEOUT="${DASK_REC_START_TIMEOUT:-60}"
TLS_DIR="${DASK_REC_TLS_DIR:-}"
TLS_CA_FILE="${DASK_REC_TLS_CA_FILE:-}"
TLS_CERT="${DASK_REC_TLS_CERT:-}"
TLS_KEY="${DASK_REC_TLS_KEY:-}"
TLS_WORKER_CERT="${DASK_REC_TLS_WORKER_CERT:-}"
TLS_WORKER_KEY="${DASK_REC_TLS_WORKER_KEY:-}"
DASK="${DASK_REC_DASK:-}"

need_value() { [ "$#" -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"; }
while [ "$#" -gt 0 ]; do
  case "$1" in
    --stop) MODE=stop ;;
    --status) MODE=status ;;
    --add) MODE=add ;;
    --dir) need_value "$@"; DIR="$2"; shift ;;
    --host) need_value "$@"; HOST="$2"; shift ;;
    --port) need_value "$@"; PORT="$2"; shift ;;
    --dashboard-port) need_value "$@"; DASHBOARD_PORT="$2"; shift ;;
    --workers) need_value "$@"; WORKERS="$2"; shift ;;
    --memory-limit) need_value "$@"; MEMORY_LIMIT="$2"; shift ;;
    --nthreads) need_value "$@"; NTHREADS="$2"; shift ;;
    --bigmem-workers) need_value "$@"; BIGMEM_WORKERS="$2"; shift ;;
    --bigmem-memory-limit) need_value "$@"; BIGMEM_MEMORY_LIMIT="$2"; shift ;;
    --no-nanny) NO_NANNY=1 ;;
    --death-timeout) need_value "$@"; DEATH_TIMEOUT="$2"; shift ;;
    --idle-timeout) need_value "$@"; IDLE_TIMEOUT="$2"; shift ;;
    --timeout) need_value "$@"; TIMEOUT="$2"; shift ;;
    --tls-dir) need_value "$@"; TLS_DIR="$2"; shift ;;
    --tls-ca-file) need_value "$@"; TLS_CA_FILE="$2"; shift ;;
    --tls-cert) need_value "$@"; TLS_CERT="$2"; shift ;;
    --tls-key) need_value "$@"; TLS_KEY="$2"; shift ;;
    --tls-worker-cert) need_value "$@"; TLS_WORKER_CERT="$2"; shift ;;
    --tls-worker-key) need_value "$@"; TLS_WORKER_KEY="$2"; shift ;;
    --dask) need_value "$@"; DASK="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done

is_count() { case "$1" in ''|*[!0-9]*) return 1 ;; *) return 0 ;; esac; }
for pair in "--workers:$WORKERS" "--bigmem-workers:$BIGMEM_WORKERS" "--nthreads:$NTHREADS" "--timeout:$TIMEOUT" \
            "--death-timeout:$DEATH_TIMEOUT" "--port:$PORT"; do
  is_count "${pair#*:}" || die "${pair%%:*} must be a non-negative integer; got '${pair#*:}'"
done
[ "$NTHREADS" -ge 1 ] || die "--nthreads must be at least 1"

PIDS="$DIR/pids"
LOGS="$DIR/logs"

# ---------------------------------------------------------------------------------------------- stop
alive() { kill -0 "$1" 2>/dev/null; }

# Send a signal to a process group (started with setsid), or to the process alone without setsid.
signal_pid() {
  local sig="$1" pid="$2"
  kill "-$sig" -- "-$pid" 2>/dev/null || kill "-$sig" "$pid" 2>/dev/null || true
}

# stop_pidfiles FILE...: SIGTERM, wait up to 10 s, then SIGKILL what is left.
stop_pidfiles() {
  local f pid waited
  for f in "$@"; do
    [ -f "$f" ] || continue
    pid="$(cat "$f")"
    if is_count "$pid" && alive "$pid"; then
      say "stopping $(basename "$f" .pid) (pid $pid)"
      signal_pid TERM "$pid"
    fi
  done
  waited=0
  while [ "$waited" -lt 100 ]; do
    local any=0
    for f in "$@"; do
      [ -f "$f" ] || continue
      pid="$(cat "$f")"
      if is_count "$pid" && { alive "$pid" || kill -0 -- "-$pid" 2>/dev/null; }; then any=1; fi
    done
    [ "$any" = 1 ] || break
    sleep 0.1
    waited=$((waited + 1))
  done
  for f in "$@"; do
    [ -f "$f" ] || continue
    pid="$(cat "$f")"
    if is_count "$pid" && { alive "$pid" || kill -0 -- "-$pid" 2>/dev/null; }; then
      say "killing $(basename "$f" .pid) (pid $pid)"
      signal_pid KILL "$pid"
    fi
    rm -f "$f"
  done
}

stop_cluster() {
  [ -d "$PIDS" ] || { say "nothing to stop in $DIR"; return 0; }
  # workers first (so they do not try to reconnect), then the scheduler
  local workers=() f
  for f in "$PIDS"/*.pid; do
    [ -e "$f" ] || continue
    [ "$(basename "$f")" = scheduler.pid ] || workers+=("$f")
  done
  if [ "${#workers[@]}" -gt 0 ]; then stop_pidfiles "${workers[@]}"; fi
  stop_pidfiles "$PIDS/scheduler.pid"
  rm -f "$DIR/address"
  say "stopped; logs kept in $LOGS"
}

status_cluster() {
  local f pid state rc=1
  [ -d "$PIDS" ] || { say "no cluster in $DIR"; return 1; }
  [ -f "$DIR/address" ] && echo "scheduler address: $(cat "$DIR/address")"
  for f in "$PIDS"/*.pid; do
    [ -e "$f" ] || continue
    pid="$(cat "$f")"
    if alive "$pid"; then state=running; rc=0; else state=dead; fi
    printf '%-20s pid %-8s %s\n' "$(basename "$f" .pid)" "$pid" "$state"
  done
  return "$rc"
}

case "$MODE" in
  stop) stop_cluster; exit 0 ;;
  status) status_cluster; exit $? ;;
esac

# --------------------------------------------------------------------------------------------- start
if [ -z "$DASK" ]; then
  DASK="$(command -v dask || true)"
  [ -n "$DASK" ] || die "the 'dask' command is not on PATH: activate the environment with dask_rec installed \
(e.g. 'source .venv/bin/activate') or pass --dask PATH"
fi
[ -x "$DASK" ] || die "--dask $DASK is not executable"

# TLS: --tls-dir fills in whatever was not given explicitly.
if [ -n "$TLS_DIR" ]; then
  [ -d "$TLS_DIR" ] || die "--tls-dir $TLS_DIR is not a directory (make it with cluster/tls/make-certs.sh)"
  TLS_CA_FILE="${TLS_CA_FILE:-$TLS_DIR/ca.pem}"
  TLS_CERT="${TLS_CERT:-$TLS_DIR/scheduler.pem}"
  TLS_KEY="${TLS_KEY:-$TLS_DIR/scheduler-key.pem}"
  TLS_WORKER_CERT="${TLS_WORKER_CERT:-$TLS_DIR/worker.pem}"
  TLS_WORKER_KEY="${TLS_WORKER_KEY:-$TLS_DIR/worker-key.pem}"
fi
TLS=0
if [ -n "$TLS_CA_FILE$TLS_CERT$TLS_KEY" ]; then
  TLS=1
  [ -n "$TLS_CA_FILE" ] && [ -n "$TLS_CERT" ] && [ -n "$TLS_KEY" ] \
    || die "TLS needs --tls-ca-file, --tls-cert and --tls-key (or --tls-dir)"
  TLS_WORKER_CERT="${TLS_WORKER_CERT:-$TLS_CERT}"
  TLS_WORKER_KEY="${TLS_WORKER_KEY:-$TLS_KEY}"
  for f in "$TLS_CA_FILE" "$TLS_CERT" "$TLS_KEY" "$TLS_WORKER_CERT" "$TLS_WORKER_KEY"; do
    [ -r "$f" ] || die "TLS file $f is missing or unreadable"
  done
  # absolute paths: the processes do not run in this directory
  abspath() { (cd "$(dirname "$1")" && printf '%s/%s\n' "$(pwd -P)" "$(basename "$1")"); }
  TLS_CA_FILE="$(abspath "$TLS_CA_FILE")"; TLS_CERT="$(abspath "$TLS_CERT")"; TLS_KEY="$(abspath "$TLS_KEY")"
  TLS_WORKER_CERT="$(abspath "$TLS_WORKER_CERT")"; TLS_WORKER_KEY="$(abspath "$TLS_WORKER_KEY")"
  # refuse unencrypted connections anywhere in this cluster
  export DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION=True
fi

mkdir -p "$PIDS" "$LOGS" "$DIR/work"
DIR="$(cd "$DIR" && pwd -P)"
PIDS="$DIR/pids"
LOGS="$DIR/logs"
SCHEDULER_FILE="$DIR/scheduler.json"

if command -v setsid >/dev/null 2>&1; then SETSID=setsid; else SETSID=; fi

# launch NAME CMD...: start CMD in the background in its own session, log and pid in DIR.
launch() {
  local name="$1"; shift
  # shellcheck disable=SC2086 # $SETSID is empty or one word
  $SETSID "$@" </dev/null >>"$LOGS/$name.log" 2>&1 &
  echo "$!" >"$PIDS/$name.pid"
}

# wait_for_log NAME PATTERN WHAT: wait until the log of NAME contains PATTERN, or fail.
wait_for_log() {
  local name="$1" pattern="$2" what="$3" pid deadline
  pid="$(cat "$PIDS/$name.pid")"
  deadline=$((SECONDS + TIMEOUT))
  until grep -q -- "$pattern" "$LOGS/$name.log" 2>/dev/null; do
    if ! alive "$pid"; then
      say "$what (pid $pid) exited; last lines of $LOGS/$name.log:"
      tail -n 20 "$LOGS/$name.log" >&2 || true
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "$what not ready after $TIMEOUT s; last lines of $LOGS/$name.log:"
      tail -n 20 "$LOGS/$name.log" >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

fail_start() {
  say "start failed; stopping what was started"
  stop_cluster >/dev/null 2>&1 || true
  exit 1
}

tls_args() {  # tls_args CERT KEY
  if [ "$TLS" = 1 ]; then printf '%s\n' --tls-ca-file "$TLS_CA_FILE" --tls-cert "$1" --tls-key "$2"; fi
}

start_scheduler() {
  if [ -f "$PIDS/scheduler.pid" ] && alive "$(cat "$PIDS/scheduler.pid")"; then
    die "a scheduler is already running from $DIR (pid $(cat "$PIDS/scheduler.pid")); stop it with --stop --dir $DIR"
  fi
  rm -f "$SCHEDULER_FILE" "$DIR/address" "$LOGS"/*.log "$PIDS"/*.pid
  local args=(scheduler --host "$HOST" --port "$PORT" --scheduler-file "$SCHEDULER_FILE")
  if [ "$DASHBOARD_PORT" = none ]; then
    args+=(--no-dashboard)
  else
    args+=(--dashboard-address "$HOST:$DASHBOARD_PORT")
  fi
  [ -n "$IDLE_TIMEOUT" ] && args+=(--idle-timeout "$IDLE_TIMEOUT")
  if [ "$TLS" = 1 ]; then
    args+=(--protocol tls)
    while IFS= read -r a; do args+=("$a"); done < <(tls_args "$TLS_CERT" "$TLS_KEY")
  fi
  launch scheduler "$DASK" "${args[@]}"
  wait_for_log scheduler "Scheduler at:" "the scheduler" || fail_start
  local deadline=$((SECONDS + TIMEOUT))
  until [ -s "$SCHEDULER_FILE" ] && grep -q '"address"' "$SCHEDULER_FILE"; do
    [ "$SECONDS" -lt "$deadline" ] || { say "no scheduler file $SCHEDULER_FILE"; fail_start; }
    sleep 0.1
  done
}

scheduler_address() {
  sed -n 's/^ *"address": *"\([^"]*\)".*/\1/p' "$SCHEDULER_FILE" | head -n 1
}

# next_name PREFIX: PREFIX-K with the smallest K not used by a pid file yet
next_name() {
  local k=0
  while [ -e "$PIDS/$1-$k.pid" ]; do k=$((k + 1)); done
  echo "$1-$k"
}

STARTED=()
start_worker() {  # start_worker PREFIX MEMORY_LIMIT [EXTRA ARGS...]
  local prefix="$1" memory="$2" name; shift 2
  name="$(next_name "$prefix")"
  local args=(worker --scheduler-file "$SCHEDULER_FILE" --name "$name" --host "$HOST" --nthreads "$NTHREADS"
              --memory-limit "$memory" --local-directory "$DIR/work/$name" --death-timeout "$DEATH_TIMEOUT"
              --no-dashboard)
  [ "$NO_NANNY" = 1 ] && args+=(--no-nanny)
  if [ "$TLS" = 1 ]; then
    while IFS= read -r a; do args+=("$a"); done < <(tls_args "$TLS_WORKER_CERT" "$TLS_WORKER_KEY")
  fi
  launch "$name" "$DASK" "${args[@]}" "$@"
  STARTED+=("$name")
}

if [ "$MODE" = start ]; then
  start_scheduler
else  # --add: workers for the scheduler already running from DIR
  [ -f "$PIDS/scheduler.pid" ] && alive "$(cat "$PIDS/scheduler.pid")" && [ -s "$SCHEDULER_FILE" ] \
    || die "no running scheduler in $DIR: start one without --add first"
fi
ADDRESS="$(scheduler_address)"
[ -n "$ADDRESS" ] || { say "cannot read the scheduler address from $SCHEDULER_FILE"; fail_start; }

i=0
while [ "$i" -lt "$WORKERS" ]; do start_worker worker "$MEMORY_LIMIT"; i=$((i + 1)); done
i=0
while [ "$i" -lt "$BIGMEM_WORKERS" ]; do
  start_worker bigmem "$BIGMEM_MEMORY_LIMIT" --resources "bigmem=1"; i=$((i + 1))
done
for name in ${STARTED[@]+"${STARTED[@]}"}; do
  if ! wait_for_log "$name" "Registered to:" "worker $name"; then
    if [ "$MODE" = start ]; then fail_start; else exit 1; fi
  fi
done

echo "$ADDRESS" >"$DIR/address"
say "scheduler at $ADDRESS with ${#STARTED[@]} new worker(s) (${STARTED[*]:-none}); logs in $LOGS"
say "stop with: $0 --stop --dir $DIR"
echo "$ADDRESS"
