"""The event sink the engine reports through; the Django side implements it."""
from __future__ import annotations

import time
from typing import Protocol


def now_ms() -> int:
    return int(time.time() * 1000)


class EventSink(Protocol):
    """Receives every event of a run. Must not raise and must not block for long."""

    def emit(self, event: dict) -> None: ...


class ListSink:
    """Collects events in memory: for tests and for callers that only want the result."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def emit(self, event: dict) -> None:
        self.events.append(event)
