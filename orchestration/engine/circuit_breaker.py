"""Per-model circuit breakers, shared by every request of the process.

closed     calls go through; the breaker opens after `failures` consecutive failed calls, or when
           the error rate over the last `window` calls reaches `error_rate` (once `min_calls` were seen).
open       calls are refused (the engine falls back) until `cooldown_s` has passed.
half_open  one probe call is let through; success closes the breaker, failure opens it again
           for another cooldown. Other calls are refused while the probe is in flight.

A failure is a call that raised a *retryable* ProviderError (5xx, 429, timeout, connection error,
malformed answer). A non-retryable error (400, 401, …) means the provider answered: it counts as a
success here, because falling back cannot fix a bad request.

Every state change is emitted as a `model.health` event (`events.model_health`) through the sink of
the request that caused it. The lock is a threading one because one process may run several event
loops (the ASGI server, in-process runners, tests).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, replace

from orchestration.engine.events import EventSink, model_health
from orchestration.engine.types import ModelSpec

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True)
class BreakerSettings:
    failures: int = 5  # consecutive failed calls that open the circuit
    error_rate: float = 0.5  # ... or this share of failures over the window
    window: int = 20
    min_calls: int = 10  # the error rate is only judged over at least this many calls
    cooldown_s: float = 30.0  # how long an open circuit refuses calls before a half-open probe

    def for_model(self, model: ModelSpec) -> "BreakerSettings":
        """Per-provider overrides from the provider's options (`circuit_failures`, `circuit_cooldown_s`)."""
        options = model.provider.options
        overrides = {}
        if "circuit_failures" in options:
            overrides["failures"] = int(options["circuit_failures"])
        if "circuit_cooldown_s" in options:
            overrides["cooldown_s"] = float(options["circuit_cooldown_s"])
        return replace(self, **overrides) if overrides else self


@dataclass(frozen=True)
class Admission:
    """A call let through; hand it back to `CircuitBreaker.release` exactly once."""

    probe: bool  # the half-open probe: its outcome decides the circuit


CALL, PROBE = Admission(probe=False), Admission(probe=True)  # immutable, so shared


class CircuitBreaker:
    def __init__(self, model: str, settings: BreakerSettings, clock=time.monotonic):
        self.model = model
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self.state = CLOSED
        self.in_flight = 0
        self._consecutive_failures = 0
        self._outcomes: deque[bool] = deque(maxlen=settings.window)  # True = failed
        self._opened_at = 0.0
        self._probe_in_flight = False

    def admit(self, sink: EventSink | None = None) -> Admission | None:
        """Let a call through (an Admission) or refuse it (None) because the circuit is open."""
        changed = None
        with self._lock:
            if self.state == OPEN and self._clock() - self._opened_at >= self.settings.cooldown_s:
                self.state, changed = HALF_OPEN, HALF_OPEN
            if self.state == OPEN or (self.state == HALF_OPEN and self._probe_in_flight):
                admission = None
            else:
                probe = self.state == HALF_OPEN
                self._probe_in_flight = self._probe_in_flight or probe
                self.in_flight += 1
                admission = PROBE if probe else CALL
            in_flight = self.in_flight
        if changed:
            self._emit(sink, changed, in_flight)
        return admission

    def release(self, admission: Admission, *, failed: bool | None, sink: EventSink | None = None) -> str | None:
        """Record a call's outcome (None = cancelled, no verdict). Returns the new state if it changed."""
        changed = None
        with self._lock:
            self.in_flight = max(0, self.in_flight - 1)
            if admission.probe:
                self._probe_in_flight = False
            if failed is None:
                pass
            elif admission.probe:
                changed = self._open() if failed else self._close()
            elif self.state == CLOSED:  # a call admitted before the circuit opened has no say after
                self._outcomes.append(failed)
                self._consecutive_failures = self._consecutive_failures + 1 if failed else 0
                if failed and self._should_open():
                    changed = self._open()
            in_flight = self.in_flight
        if changed:
            self._emit(sink, changed, in_flight)
        return changed

    def _should_open(self) -> bool:
        s = self.settings
        if self._consecutive_failures >= s.failures:
            return True
        calls = len(self._outcomes)
        return calls >= s.min_calls and sum(self._outcomes) / calls >= s.error_rate

    def _open(self) -> str:
        self.state = OPEN
        self._opened_at = self._clock()
        return OPEN

    def _close(self) -> str:
        self.state = CLOSED
        self._consecutive_failures = 0
        self._outcomes.clear()
        return CLOSED

    def _emit(self, sink: EventSink | None, state: str, in_flight: int) -> None:
        if sink is not None:
            sink.emit(model_health(model=self.model, state=state, in_flight=in_flight))


class CircuitBreakers:
    """The process's breakers by model alias. A model whose configuration changed gets a fresh breaker."""

    def __init__(self, settings: BreakerSettings | None = None, clock=time.monotonic):
        self.settings = settings or BreakerSettings()
        self._clock = clock
        self._lock = threading.Lock()
        self._by_alias: dict[str, tuple[tuple, CircuitBreaker]] = {}

    def configure(self, **settings) -> None:
        """Change the defaults (from Django settings at start-up, or in tests); existing breakers are reset."""
        with self._lock:
            self.settings = replace(self.settings, **settings)
            self._by_alias.clear()

    def for_model(self, model: ModelSpec) -> CircuitBreaker:
        settings = self.settings.for_model(model)
        # An admin who repoints or re-tunes a model starts it with a closed circuit.
        fingerprint = (model.upstream_name, model.provider.name, model.provider.base_url, settings)
        with self._lock:
            entry = self._by_alias.get(model.alias)
            if entry is None or entry[0] != fingerprint:
                entry = self._by_alias[model.alias] = (fingerprint, CircuitBreaker(model.alias, settings, self._clock))
            return entry[1]

    def states(self) -> dict[str, dict]:
        """{alias: {"state", "in_flight"}} for dashboards' snapshots."""
        with self._lock:
            breakers = [entry[1] for entry in self._by_alias.values()]
        return {b.model: {"state": b.state, "in_flight": b.in_flight} for b in breakers}

    def reset(self) -> None:
        with self._lock:
            self._by_alias.clear()


# Shared by every Engine of the process unless one is given its own.
circuit_breakers = CircuitBreakers()
