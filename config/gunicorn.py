"""gunicorn settings for Podium's production web server: one port, N uvicorn worker processes.

    gunicorn -c config/gunicorn.py -b 127.0.0.1:8000        # `make up` and `make serve` run this

gunicorn's master binds the one listening socket and forks the workers; every worker accepts from that
socket, so HTTP (/v1, /api, pages) and websockets reach whichever worker takes the connection, and a
worker that dies (SIGKILL, OOM) is replaced by the master while the others keep serving. Each worker is
uvicorn (uvloop + httptools, the `websockets` library for /ws/) running the whole ASGI application
(config/asgi.py) with its lifespan: startup per worker, and on a graceful stop (SIGTERM, SIGINT) the
worker closes its provider clients and flushes its batched writer before it exits.

The app is not preloaded in the master: each worker imports it after the fork, so no thread, event
loop or database/Redis connection is shared between processes.

Environment:
  WEB_PROCESSES            worker processes (default: the number of cores this process may use)
  WEB_GRACEFUL_TIMEOUT_S   how long a stopping worker may finish its requests (default 20)
  LOG_LEVEL                gunicorn's own log level (default info)

Several workers need REDIS_URL: without it Podium is in the embedded mode (in-memory channel layer,
in-process runner and timer), which is one process by design, so this file keeps one worker then and
refuses WEB_PROCESSES > 1.
"""
from __future__ import annotations

import os
import sys

from uvicorn_worker import UvicornWorker


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _processes() -> int:
    wanted = os.environ.get("WEB_PROCESSES", "").strip()
    count = int(wanted) if wanted else _cores()
    if count < 1:
        sys.exit(f"WEB_PROCESSES={wanted}: at least one web process")
    if not os.environ.get("REDIS_URL"):
        if wanted and count > 1:
            sys.exit(f"WEB_PROCESSES={count} needs REDIS_URL: without it Podium runs embedded (in-memory channel "
                     "layer, in-process runner), which is one process")
        count = 1
    return count


class PodiumUvicornWorker(UvicornWorker):
    """uvicorn as a gunicorn worker, as `make run-uvicorn` runs it.

    proxy_headers off: which X-Forwarded-For to believe is Podium's decision (PODIUM_TRUSTED_PROXIES,
    read right to left past the trusted proxies), not the server's; with uvicorn's default the client
    address would already be rewritten for any peer in forwarded_allow_ips before Podium sees it.
    lifespan on: a startup failure stops the worker instead of serving without the app's setup."""

    CONFIG_KWARGS = {
        "loop": "uvloop",
        "http": "httptools",
        "ws": "websockets-sansio",
        "lifespan": "on",
        "proxy_headers": False,
        "server_header": False,
    }


wsgi_app = "config.asgi:application"  # an ASGI application: gunicorn only hands it to the worker class
worker_class = PodiumUvicornWorker
workers = _processes()
bind = ["127.0.0.1:8000"]  # -b on the command line replaces it
preload_app = False
forwarded_allow_ips = ""  # trust no peer's forwarding headers (proxy_headers is off as well)
# Longer than a reverse proxy's idle keep-alive to its upstream (nginx: 60 s), so the proxy closes first.
keepalive = 75
timeout = 30  # a worker whose event loop stops answering the master's heartbeat this long is replaced
graceful_timeout = int(os.environ.get("WEB_GRACEFUL_TIMEOUT_S", "20"))
accesslog = None  # one line per /v1 call costs CPU on the hot path; /metrics counts the calls
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
proc_name = "podium-web"
control_socket_disable = True  # gunicorn's control socket is one per user by default: two servers would clash


def child_exit(server, worker) -> None:
    """Prometheus multiprocess mode: a dead worker's live gauges must not linger (its counters stay)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
