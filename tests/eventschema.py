"""Checking live events against their types (orchestration/engine/events.py).

conftest.py feeds every event the suite publishes (and every event an engine test's ListSink collects) to
one `EventChecker`; a test that saw an event not matching its type fails, and the message names the event
and the field. pydantic does the type checking (about 2 µs an event); the keys a type does not declare are
checked here, since a TypedDict cannot forbid them itself.
"""
from __future__ import annotations

import threading
from collections import Counter
from typing import Annotated

from pydantic import Field, TypeAdapter, ValidationError

from orchestration.engine.events import EVENT_TYPES, Event

_EVENT = TypeAdapter(Annotated[Event, Field(discriminator="type")])
_IDENTIFYING = ("run_id", "step_id", "key", "review_id", "model")


def describe(event: dict) -> str:
    """`step.finished (run_id=…, step_id=…, key=…)`: enough to find the publisher."""
    ids = ", ".join(f"{name}={event[name]}" for name in _IDENTIFYING if event.get(name))
    return f"{event.get('type')} ({ids})"


def event_problems(event) -> list[str]:
    """What is wrong with one event, each naming the event and the field; [] when it matches its type."""
    if not isinstance(event, dict):
        return [f"an event must be a dict, not {type(event).__name__}"]
    shape = EVENT_TYPES.get(event.get("type"))
    if shape is None:
        return [f"{describe(event)}: unknown event type {event.get('type')!r} (known: {', '.join(EVENT_TYPES)})"]
    name = describe(event)
    problems = [f"{name}: field '{field}' is not declared by {shape.__name__}"
                for field in sorted(set(event) - shape.__required_keys__ - shape.__optional_keys__)]
    try:
        _EVENT.validate_python(event, strict=True)
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"][1:])  # loc[0] is the event type
            got = "" if error["type"] == "missing" else f" (got {error['input']!r:.80})"
            problems.append(f"{name}: field '{field}': {error['msg']}{got}")
    return problems


class EventChecker:
    """Collects the problems of the events it is fed, from any thread, until `drain`."""

    def __init__(self) -> None:
        self.checked = 0
        self.types: Counter[str] = Counter()
        self._problems: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, event) -> None:
        problems = event_problems(event)
        with self._lock:
            self.checked += 1
            self.types[event.get("type") if isinstance(event, dict) else None] += 1
            self._problems.extend(problems)

    def drain(self) -> list[str]:
        with self._lock:
            problems, self._problems = self._problems, []
        return problems
