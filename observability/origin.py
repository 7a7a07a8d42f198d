"""Origin stamping: every live event a process publishes carries the process and a counter.

A receiver (the dashboard hub) that sees a number missing knows an event was lost on the way.
"""
from __future__ import annotations

import itertools
import os
import threading
import uuid

ORIGIN = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
_origin_counter = itertools.count(1)
_origin_lock = threading.Lock()


def stamp_origin(event: dict) -> None:
    """A live-event observer: number this process's events so a receiver can tell one went missing."""
    with _origin_lock:
        event["origin"] = ORIGIN
        event["oseq"] = next(_origin_counter)
