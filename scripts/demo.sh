#!/usr/bin/env bash
# Runs the web server (gunicorn + uvicorn worker, config/gunicorn.py) and the demo traffic generator;
# Ctrl-C stops both.
set -euo pipefail
HOST=${HOST:-127.0.0.1}; PORT=${PORT:-8000}; PY=${PY:-.venv/bin/python}
KEY=$(sed -n 's/^API key: *//p' var/demo-credentials.txt)
pids=()
cleanup() { trap - INT TERM EXIT; kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; echo; echo "Podium stopped."; }
trap cleanup INT TERM EXIT
LOG_LEVEL=${LOG_LEVEL:-warning} "$(dirname "$PY")/gunicorn" -c config/gunicorn.py -b "$HOST:$PORT" &
pids+=($!)
"$PY" manage.py podium_demo_traffic --url "http://$HOST:$PORT" --key "$KEY" --rate 3 >/dev/null &
pids+=($!)
echo
echo "Podium is running on http://$HOST:$PORT/  (dashboard; log in with the admin user above)"
echo "Admin: http://$HOST:$PORT/admin/   API docs: http://$HOST:$PORT/api/docs/"
echo "Try:   curl http://$HOST:$PORT/v1/chat/completions -H 'authorization: Bearer $KEY' \\"
echo "         -d '{\"model\": \"swift-mini\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}'"
echo "Credentials are also in var/demo-credentials.txt. Ctrl-C stops everything."
wait -n "${pids[@]}"
