"""Which Celery workers are alive: each worker's main process keeps a short-lived key in Redis.

`podium:worker:<name>` (the worker's node name, e.g. worker1@host) lives PRESENCE_TTL_S and is renewed every
third of that by a daemon thread while the worker runs; a worker that dies (SIGKILL, OOM) simply stops
renewing, so `live_workers()` counts it out within PRESENCE_TTL_S. A gauge, not Celery's own
heartbeats: those need the event protocol (gossip, `-E`) and a monitor reading them.
"""
from __future__ import annotations

import logging
import threading

from django.conf import settings

logger = logging.getLogger(__name__)
PRESENCE_PREFIX = "podium:worker:"
PRESENCE_TTL_S = 30


def _client():
    import redis

    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


class WorkerPresence:
    """Started in a worker's main process when it is ready; stopped (and the key removed) at shutdown."""

    def __init__(self, name: str, ttl_s: float = PRESENCE_TTL_S) -> None:
        self.key, self.ttl_s = PRESENCE_PREFIX + name, ttl_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="worker-presence", daemon=True)

    def start(self) -> "WorkerPresence":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            _client().delete(self.key)
        except Exception:
            pass  # it expires by itself

    def _beat(self) -> None:
        client = _client()
        while True:
            try:
                client.set(self.key, "alive", px=int(self.ttl_s * 1000))
            except Exception:
                logger.warning("worker presence not renewed: Redis unavailable")
            if self._stop.wait(self.ttl_s / 3):
                return


def live_workers() -> int | None:
    """Workers whose presence key is alive, or None without Redis (the embedded mode has no workers)."""
    if not getattr(settings, "REDIS_URL", ""):
        return None
    client = _client()
    try:
        return sum(1 for _ in client.scan_iter(match=PRESENCE_PREFIX + "*", count=500))
    finally:
        client.close()
