#!/usr/bin/env bash
# A production-like Podium on this machine: one address (HOST:PORT, default 127.0.0.1:8000) served by
# WEB_PROCESSES web processes (default: one per core; gunicorn's master holds the port, each worker is
# uvicorn running HTTP and websockets, config/gunicorn.py), two Celery workers and Celery beat, against
# PostgreSQL (DATABASE_URL) and Redis (REDIS_URL). Migrates first. Ctrl-C stops all of it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
BIN=$(dirname "$PY")
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
WORKERS=${WORKERS:-2}
WORKER_CONCURRENCY=${WORKER_CONCURRENCY:-2}
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/podium}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
export PODIUM_VAR_DIR=${PODIUM_VAR_DIR:-var}
# A production-like stack signs sessions with SECRET_KEY: never the built-in insecure one. DEMO=1 makes (once)
# and keeps a random key in var/secret-key, for trying the stack out on this machine.
if [ -z "${SECRET_KEY:-}" ]; then
  if [ "${DEMO:-}" = 1 ]; then
    mkdir -p "$PODIUM_VAR_DIR"
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
# Every process of this host writes its metrics here; /metrics on any web process adds them all up.
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

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "stopping ${#pids[@]} processes…"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  echo "Podium stopped."
}
trap cleanup INT TERM EXIT

"$BIN/gunicorn" -c config/gunicorn.py -b "$HOST:$PORT" &
pids+=($!)
for n in $(seq 1 "$WORKERS"); do
  "$BIN/celery" -A config worker -n "worker$n@%h" -c "$WORKER_CONCURRENCY" --loglevel=WARNING &
  pids+=($!)
done
"$BIN/celery" -A config beat --loglevel=WARNING --schedule "$PODIUM_VAR_DIR/celerybeat-schedule" &
pids+=($!)

URL="http://$HOST:$PORT"
for _ in $(seq 1 150); do
  curl -fs "$URL/readyz" >/dev/null 2>&1 && break
  kill -0 "${pids[0]}" 2>/dev/null || break
  sleep 0.2
done
echo "web: $(pgrep -P "${pids[0]}" | wc -l) processes on one port (WEB_PROCESSES=${WEB_PROCESSES:-one per core})   readiness: $(curl -s "$URL/readyz" || echo 'not answering')"
echo "workers: $WORKERS × $WORKER_CONCURRENCY processes, plus beat. Metrics: $URL/metrics"
echo
echo "Podium: $URL/"
echo
echo "Ctrl-C stops everything."
wait -n "${pids[@]}"
echo "a process exited; stopping the rest"
