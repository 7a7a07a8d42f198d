#!/usr/bin/env bash
# A production-like Podium on this machine under supervisord (config/supervisord.conf): one address (HOST:PORT,
# default 127.0.0.1:8000) served by WEB_PROCESSES web processes (default: one per core; gunicorn's master holds
# the port, each worker is uvicorn running HTTP and websockets, config/gunicorn.py), WORKERS Celery workers
# (default 2) and Celery beat, against PostgreSQL (DATABASE_URL) and Redis (REDIS_URL). Migrates first.
# supervisord runs in the foreground and restarts any program that exits; every line of output carries its
# program's name (`web | ...`, `worker1 | ...`). Ctrl-C (or SIGTERM) stops everything gracefully and exits 0.
#
#   scripts/up.sh --log-listener   supervisord's `logs` event listener (config/supervisord.conf), not for people
set -euo pipefail
cd "$(dirname "$0")/.."

# --- the `logs` event listener: supervisord hands it every program's output and state changes; it writes them,
# line by line behind the program's name, to its stderr, which supervisord passes to its own standard output.
LOG_LISTENER=$(cat <<'EOF'
import os
import sys

out, events, answers = sys.stderr.buffer, sys.stdin.buffer, sys.stdout.buffer
WIDTH = 11
partial = {}  # a program's last line until its newline arrives


def fields(line):
    return dict(field.split(":", 1) for field in line.split())


def emit(name, text):
    prefix = f"{name:<{WIDTH}} | ".encode()
    out.write(b"".join(prefix + line + b"\n" for line in text.split(b"\n")))


def flush_partial(name):
    rest = partial.pop(name, b"")
    if rest:
        emit(name, rest)


def state(name, change, info):
    pid = f" (pid {info['pid']})" if "pid" in info else ""
    if change == "RUNNING":
        return f"{name} running{pid}"
    if change == "EXITED":
        how = "exited" if info.get("expected") == "1" else "exited unexpectedly"
        return f"{name} {how}{pid}: restarting"
    if change == "BACKOFF":
        return f"{name} exited too quickly, trying again (attempt {info.get('tries', '?')})"
    if change == "FATAL":
        return f"{name} could not start: given up (its log: {os.environ.get('PODIUM_VAR_DIR', 'var')}/log/{name}.log)"
    if change == "STOPPING":
        return f"{name} stopping{pid}"
    if change == "STOPPED":
        return f"{name} stopped"
    return None


while True:
    answers.write(b"READY\n")
    answers.flush()
    header = fields(events.readline().decode())
    payload = events.read(int(header["len"]))
    head, _, data = payload.partition(b"\n")
    info = fields(head.decode(errors="replace"))
    name, event = info.get("processname", "?"), header.get("eventname", "")
    if event.startswith("PROCESS_LOG"):
        data = partial.pop(name, b"") + data
        complete, newline, rest = data.rpartition(b"\n")
        if newline:
            emit(name, complete)
        if rest:
            partial[name] = rest
            if len(rest) > 65536:
                flush_partial(name)
    elif event.startswith("PROCESS_STATE_") and info.get("groupname") != "logs":
        if event in ("PROCESS_STATE_EXITED", "PROCESS_STATE_STOPPED"):
            flush_partial(name)
        message = state(name, event[len("PROCESS_STATE_"):], info)
        if message:
            emit("supervisord", message.encode())
    out.flush()
    answers.write(b"RESULT 2\nOK")
    answers.flush()
EOF
)
if [ "${1:-}" = --log-listener ]; then
  exec "${PODIUM_BIN:-.venv/bin}/python" -u -c "$LOG_LISTENER"
fi

PY=${PY:-.venv/bin/python}
BIN=$(cd "$(dirname "$PY")" && pwd)
export PODIUM_BIN=$BIN
export HOST=${HOST:-127.0.0.1}
export PORT=${PORT:-8000}
export WORKERS=${WORKERS:-2}
export WORKER_CONCURRENCY=${WORKER_CONCURRENCY:-2}
export CELERY_LOG_LEVEL=${CELERY_LOG_LEVEL:-WARNING}
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/podium}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
mkdir -p "${PODIUM_VAR_DIR:-var}"
PODIUM_VAR_DIR=$(cd "${PODIUM_VAR_DIR:-var}" && pwd)  # absolute: supervisord's files and the programs' share it
export PODIUM_VAR_DIR
CONF=config/supervisord.conf
# A production-like stack signs sessions with SECRET_KEY: never the built-in insecure one. DEMO=1 makes (once)
# and keeps a random key in var/secret-key, for trying the stack out on this machine.
if [ -z "${SECRET_KEY:-}" ]; then
  if [ "${DEMO:-}" = 1 ]; then
    [ -s "$PODIUM_VAR_DIR/secret-key" ] || (umask 077; "$PY" -c "import secrets; print(secrets.token_urlsafe(50))" \
      > "$PODIUM_VAR_DIR/secret-key")
    SECRET_KEY=$(cat "$PODIUM_VAR_DIR/secret-key")
    export SECRET_KEY
    echo "DEMO=1: SECRET_KEY from $PODIUM_VAR_DIR/secret-key (this machine only)"
  else
    echo "SECRET_KEY is not set. Set it (e.g. SECRET_KEY=\$(openssl rand -base64 48) make up), or run"
    echo "DEMO=1 make up to try the stack with a random key kept in $PODIUM_VAR_DIR/secret-key."
    exit 2
  fi
fi

# One supervisord per var directory: a second would fight the first over the port and the control socket.
PIDFILE=$PODIUM_VAR_DIR/supervisor/supervisord.pid
if [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null \
   && grep -q supervisord "/proc/$(cat "$PIDFILE")/cmdline" 2>/dev/null; then
  echo "Podium is already running here (supervisord pid $(cat "$PIDFILE"), $PODIUM_VAR_DIR)."
  echo "Stop it first: Ctrl-C in its terminal, or kill -TERM $(cat "$PIDFILE")."
  exit 1
fi
mkdir -p "$PODIUM_VAR_DIR/supervisor" "$PODIUM_VAR_DIR/log"
# Every process of this host writes its metrics here; /metrics on any web process adds them all up. Cleared
# only here, when no supervisord of this stack runs (checked above): a program that supervisord restarts keeps
# the others' counters, and no live process's files are ever removed.
export PROMETHEUS_MULTIPROC_DIR=${PROMETHEUS_MULTIPROC_DIR:-$PODIUM_VAR_DIR/prometheus}
rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"

echo "PostgreSQL: ${DATABASE_URL%%\?*}   Redis: $REDIS_URL"
"$PY" - <<'EOF'
# Create the database on first use (needs a role allowed to; skipped when it exists).
import os
from urllib.parse import urlparse, urlunparse

import psycopg

url = urlparse(os.environ["DATABASE_URL"])
name = url.path.lstrip("/")
try:
    with psycopg.connect(urlunparse(url._replace(path="/postgres")), autocommit=True, connect_timeout=5) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
            print(f"created database {name}")
except psycopg.Error as exc:
    print(f"(could not check or create database {name}: {str(exc).strip().splitlines()[0]})")
EOF
"$PY" -c "import os, redis; redis.Redis.from_url(os.environ['REDIS_URL'], socket_connect_timeout=3).ping()" \
  || { echo "Redis does not answer at $REDIS_URL"; exit 1; }
"$PY" manage.py migrate --noinput -v0
if [ "$("$PY" manage.py shell -c 'from orchestration.models import Provider; print(Provider.objects.exists())' 2>/dev/null | tail -1)" != "True" ]; then
  echo "empty database: seeding the demo registry, an admin user and an API key"
  "$PY" manage.py podium_seed_demo
fi

URL="http://$HOST:$PORT"
# Beside supervisord: wait until the port answers /readyz, then say where Podium is (gives up with supervisord).
(
  for _ in $(seq 1 300); do
    kill -0 $$ 2>/dev/null || exit 0
    curl -fs "$URL/readyz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  kill -0 $$ 2>/dev/null || exit 0
  echo "readiness: $(curl -s "$URL/readyz" || echo 'not answering')"
  echo "web: WEB_PROCESSES=${WEB_PROCESSES:-one per core} processes on one port; workers: $WORKERS × $WORKER_CONCURRENCY" \
       "processes, plus beat. Metrics: $URL/metrics"
  echo
  echo "Podium: $URL/"
  echo
  echo "Ctrl-C stops everything. Programs: $BIN/supervisorctl -c $CONF status (run with this environment)"
) &

# supervisord in the foreground. On a terminal it gets the terminal to itself (job control), so Ctrl-C reaches
# supervisord alone — not make, which would otherwise die of the SIGINT and exit 130 — and it stops the
# programs in order and exits 0. Elsewhere it replaces this shell, so a signal to this pid reaches it.
if [ -t 0 ] && [ -t 1 ]; then
  set -m
  status=0
  "$BIN/supervisord" -c "$CONF" || status=$?
  echo "Podium stopped (supervisord exited $status; its log: $PODIUM_VAR_DIR/supervisor/supervisord.log)."
  exit "$status"
else
  exec "$BIN/supervisord" -c "$CONF"
fi
