"""The runs this process is executing right now (so a second call for one of them does nothing, and a cancel
knows whether the run's steps are someone else's to close)."""
from __future__ import annotations

import threading

_executing: set[str] = set()
_lock = threading.Lock()


def begin(run_id: str) -> bool:
    """Note that this process executes the run; False if it already does."""
    with _lock:
        if run_id in _executing:
            return False
        _executing.add(run_id)
        return True


def end(run_id: str) -> None:
    with _lock:
        _executing.discard(run_id)


def executing_here() -> frozenset[str]:
    """The runs this process is executing right now."""
    with _lock:
        return frozenset(_executing)
