"""Merging every process's metrics window through Redis, so each process sees the whole cluster.

Without REDIS_URL there is one process and nothing to merge. With it, a daemon thread writes
this process's last few seconds of buckets to `podium:metrics:partial:<origin>` (expiring) once
a second and folds in every other origin's partial. Partials overlap and replace per origin and
second, so a missed round loses nothing that a later round re-sends.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid

import orjson
from django.conf import settings

from observability.metrics_window import local_window

logger = logging.getLogger(__name__)
KEY_PREFIX = "podium:metrics:partial:"
INTERVAL_S = 1.0
OVERLAP_S = 5  # seconds re-sent each round: tolerates four missed rounds
ORIGIN = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
_started = threading.Event()
_lock = threading.Lock()
_redis_configured: bool | None = None


def exchange_once(client, window=local_window, origin: str = ORIGIN) -> int:
    """One round: publish ours, merge theirs. Returns how many peers were merged."""
    client.set(KEY_PREFIX + origin, orjson.dumps(window.export_partial(OVERLAP_S)), ex=15)
    keys = [key for key in client.scan_iter(match=KEY_PREFIX + "*", count=100)
            if key.decode() != KEY_PREFIX + origin]
    merged = 0
    for key, raw in zip(keys, client.mget(keys) if keys else []):
        if raw:
            window.merge_partial(key.decode()[len(KEY_PREFIX):], orjson.loads(raw))
            merged += 1
    window.forget_silent_peers()
    return merged


def _loop() -> None:
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
    while True:
        try:
            exchange_once(client)
        except Exception as exc:  # Redis blinked: the next round re-sends the overlap
            logger.warning("metrics exchange round failed: %s", type(exc).__name__)
        time.sleep(INTERVAL_S)


def ensure_started() -> None:
    """Start the exchange thread once per process when Redis is configured; cheap to call often."""
    global _redis_configured
    if _started.is_set():
        return
    if _redis_configured is None:  # settings are read once: this runs for every live event
        _redis_configured = bool(getattr(settings, "REDIS_URL", None))
    if not _redis_configured:
        return
    with _lock:
        if _started.is_set():
            return
        _started.set()
        threading.Thread(target=_loop, name="podium-metrics-exchange", daemon=True).start()
