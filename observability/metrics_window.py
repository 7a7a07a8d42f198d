"""Sliding-window model metrics, computed incrementally from live events; no Django imports.

Every process keeps one `local_window` fed by `orchestration.live.publish` as events are
produced (so nothing scans the Step table). Time is cut into one-second buckets per model:
calls, failures, tokens, cost and a log-scale latency histogram. Buckets add up, so windows
from several processes merge exactly: a process exports its recent buckets with
`export_partial()`, and a reader folds them in with `merge_partial(origin, partial)` — a
bucket of one origin is replaced, never added twice, so re-sending overlapping partials is
safe. `model_metrics()` and `series()` read the merged view.

Readers (the dashboard hub, Prometheus, podium_top) use:
    local_window.model_metrics(window_s=60)  -> {alias: {req_per_s, tokens_per_s, cost_per_min,
                                                 error_rate, latency_p50_ms, latency_p95_ms,
                                                 in_flight, circuit, calls, failures}}
    local_window.series(span_s=900, step_s=10) -> {"t": [epoch s...], "models": {alias: {"tokens": [...],
                                                   "cost": [...], "p50": [...], "p95": [...]}}}
    local_window.circuit_history(alias)      -> [(epoch ms, state), ...]
"""
from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque

SPAN_S = 900  # the longest window kept: the overview charts show 15 minutes
HISTOGRAM_BASE = 1.25  # latency bins grow by 25%: percentiles are exact to within that ratio
CIRCUIT_HISTORY = 50


def latency_bin(latency_ms: float) -> int:
    return max(0, math.ceil(math.log(max(latency_ms, 1.0), HISTOGRAM_BASE)))


def bin_upper_ms(index: int) -> float:
    return HISTOGRAM_BASE ** index


class Bucket:
    """One model's calls finished within one second."""

    __slots__ = ("calls", "failures", "tokens", "cost", "latency")

    def __init__(self) -> None:
        self.calls = 0
        self.failures = 0
        self.tokens = 0
        self.cost = 0.0
        self.latency: dict[int, int] = defaultdict(int)

    def add(self, other: "Bucket") -> None:
        self.calls += other.calls
        self.failures += other.failures
        self.tokens += other.tokens
        self.cost += other.cost
        for index, count in other.latency.items():
            self.latency[index] += count

    def to_wire(self) -> list:
        return [self.calls, self.failures, self.tokens, self.cost, {str(k): v for k, v in self.latency.items()}]

    @classmethod
    def from_wire(cls, data: list) -> "Bucket":
        bucket = cls()
        bucket.calls, bucket.failures, bucket.tokens, bucket.cost = data[0], data[1], data[2], data[3]
        for index, count in data[4].items():
            bucket.latency[int(index)] = count
        return bucket


def percentile(histogram: dict[int, int], fraction: float) -> float | None:
    total = sum(histogram.values())
    if not total:
        return None
    rank = fraction * total
    seen = 0
    for index in sorted(histogram):
        seen += histogram[index]
        if seen >= rank:
            return round(bin_upper_ms(index), 1)
    return round(bin_upper_ms(max(histogram)), 1)


class MetricsWindow:
    """Per-model one-second buckets over the last SPAN_S seconds, plus in-flight and circuit gauges."""

    def __init__(self, span_s: int = SPAN_S, clock=time.time) -> None:
        self.span_s = span_s
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[int, dict[str, Bucket]] = {}  # second -> alias -> bucket (this process)
        self._in_flight: dict[str, int] = defaultdict(int)
        self._circuit: dict[str, str] = {}
        self._history: dict[str, deque] = defaultdict(lambda: deque(maxlen=CIRCUIT_HISTORY))
        self._peers: dict[str, dict] = {}  # origin -> {"seen": s, "buckets": {second: {alias: Bucket}}, gauges}

    # --- feeding --------------------------------------------------------------------------
    def observe(self, event: dict) -> None:
        """Fold one live event in; unknown event types are ignored."""
        kind = event.get("type")
        if kind == "model.health":
            self._observe_health(event)
            return
        if event.get("node_type", "call") != "call" or not event.get("model"):
            return
        alias = event["model"]
        with self._lock:
            if kind == "step.started":
                self._in_flight[alias] += 1
            elif kind == "step.finished":
                self._in_flight[alias] = max(0, self._in_flight[alias] - 1)
                second = int(event.get("ts", self.clock() * 1000) // 1000)
                bucket = self._buckets.setdefault(second, {}).setdefault(alias, Bucket())
                bucket.calls += 1
                if event.get("status") == "failed":
                    bucket.failures += 1
                bucket.tokens += int(event.get("tokens_in") or 0) + int(event.get("tokens_out") or 0)
                bucket.cost += float(event.get("cost_usd") or 0.0)
                if event.get("latency_ms") is not None:
                    bucket.latency[latency_bin(float(event["latency_ms"]))] += 1
                if len(self._buckets) > self.span_s + 5:
                    self._expire(second)

    def _observe_health(self, event: dict) -> None:
        alias, state = event.get("model"), event.get("state")
        if not alias or not state:
            return
        with self._lock:
            if self._circuit.get(alias) != state:
                self._history[alias].append((int(event.get("ts") or self.clock() * 1000), state))
            self._circuit[alias] = state

    def _expire(self, now_s: int) -> None:
        oldest = now_s - self.span_s
        for second in [s for s in self._buckets if s < oldest]:
            del self._buckets[second]

    # --- merging across processes -----------------------------------------------------------
    def export_partial(self, last_s: int = 5) -> dict:
        """This process's buckets of the last `last_s` seconds and its gauges, JSON-ready."""
        now_s = int(self.clock())
        with self._lock:
            buckets = {str(s): {alias: b.to_wire() for alias, b in models.items()}
                       for s, models in self._buckets.items() if s > now_s - last_s}
            return {"ts": now_s, "buckets": buckets, "in_flight": dict(self._in_flight),
                    "circuit": dict(self._circuit)}

    def merge_partial(self, origin: str, partial: dict) -> None:
        """Fold another process's partial in: its buckets replace that origin's earlier copies."""
        with self._lock:
            peer = self._peers.setdefault(origin, {"buckets": {}, "in_flight": {}, "circuit": {}})
            peer["seen"] = partial.get("ts", int(self.clock()))
            for second, models in partial.get("buckets", {}).items():
                peer["buckets"][int(second)] = {alias: Bucket.from_wire(data) for alias, data in models.items()}
            peer["in_flight"] = dict(partial.get("in_flight", {}))
            peer["circuit"] = dict(partial.get("circuit", {}))
            oldest = int(self.clock()) - self.span_s
            for second in [s for s in peer["buckets"] if s < oldest]:
                del peer["buckets"][second]

    def forget_silent_peers(self, silent_s: float = 15) -> None:
        """A process that stopped reporting stops counting towards the gauges (its buckets age out)."""
        now_s = self.clock()
        with self._lock:
            for peer in self._peers.values():
                if peer.get("seen", 0) < now_s - silent_s:
                    peer["in_flight"], peer["circuit"] = {}, {}

    # --- reading --------------------------------------------------------------------------------
    def _merged(self, first_s: int, last_s: int) -> dict[int, dict[str, Bucket]]:
        """second -> alias -> bucket, over every origin, for first_s <= second < last_s."""
        sources = [self._buckets] + [peer["buckets"] for peer in self._peers.values()]
        merged: dict[int, dict[str, Bucket]] = {}
        for source in sources:
            for second, models in source.items():
                if first_s <= second < last_s:
                    target = merged.setdefault(second, {})
                    for alias, bucket in models.items():
                        target.setdefault(alias, Bucket()).add(bucket)
        return merged

    def _gauges(self) -> tuple[dict[str, int], dict[str, str]]:
        in_flight: dict[str, int] = defaultdict(int, self._in_flight)
        circuit = dict(self._circuit)
        for peer in self._peers.values():
            for alias, count in peer["in_flight"].items():
                in_flight[alias] += count
            for alias, state in peer["circuit"].items():
                # An open circuit anywhere is what an operator needs to see.
                if state == "open" or circuit.get(alias) in (None, "closed"):
                    circuit[alias] = state
        return dict(in_flight), circuit

    def model_metrics(self, window_s: int = 60, now: float | None = None) -> dict[str, dict]:
        """Per-model rates over the last `window_s` complete seconds, plus in-flight and circuit state."""
        now_s = int(self.clock() if now is None else now)
        with self._lock:
            merged = self._merged(now_s - window_s, now_s)
            in_flight, circuit = self._gauges()
        totals: dict[str, Bucket] = defaultdict(Bucket)
        for models in merged.values():
            for alias, bucket in models.items():
                totals[alias].add(bucket)
        result = {}
        for alias in set(totals) | set(in_flight) | set(circuit):
            bucket = totals.get(alias) or Bucket()
            result[alias] = {
                "calls": bucket.calls, "failures": bucket.failures,
                "req_per_s": round(bucket.calls / window_s, 3),
                "tokens_per_s": round(bucket.tokens / window_s, 2),
                "cost_per_min": round(bucket.cost * 60 / window_s, 8),
                "error_rate": round(bucket.failures / bucket.calls, 4) if bucket.calls else 0.0,
                "latency_p50_ms": percentile(bucket.latency, 0.50),
                "latency_p95_ms": percentile(bucket.latency, 0.95),
                "in_flight": in_flight.get(alias, 0),
                "circuit": circuit.get(alias, "closed"),
            }
        return result

    def series(self, span_s: int = SPAN_S, step_s: int = 10, now: float | None = None) -> dict:
        """Tokens, cost and latency p50/p95 per model in `step_s` slices over the last `span_s` seconds.

        The last slice is still filling; a later call returns it again with more in it."""
        now_s = int(self.clock() if now is None else now)
        end = now_s - now_s % step_s + step_s  # the slice in progress is included: charts move at once
        start = end - span_s
        with self._lock:
            merged = self._merged(start, end)
        slices = list(range(start, end, step_s))
        aliases = sorted({alias for models in merged.values() for alias in models})
        models = {}
        for alias in aliases:
            tokens, cost, p50, p95 = [], [], [], []
            for first in slices:
                bucket = Bucket()
                for second in range(first, first + step_s):
                    part = merged.get(second, {}).get(alias)
                    if part is not None:
                        bucket.add(part)
                tokens.append(bucket.tokens)
                cost.append(round(bucket.cost, 8))
                p50.append(percentile(bucket.latency, 0.5))
                p95.append(percentile(bucket.latency, 0.95))
            models[alias] = {"tokens": tokens, "cost": cost, "p50": p50, "p95": p95}
        return {"t": slices, "step_s": step_s, "models": models}

    def circuit_history(self, alias: str) -> list[tuple[int, str]]:
        with self._lock:
            return list(self._history.get(alias, ()))

    def reset(self) -> None:
        """Forget everything (tests)."""
        with self._lock:
            self._buckets.clear()
            self._in_flight.clear()
            self._circuit.clear()
            self._history.clear()
            self._peers.clear()


local_window = MetricsWindow()
