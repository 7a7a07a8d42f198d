"""What `podium_top` shows, folded from what the dashboard is fed; no terminal code here.

Two inputs, one state:
- raw live events from the channel layer (`apply`): `step.started` / `step.finished` of call
  steps and `model.health` go into the control room's sliding window
  (`observability.metrics_window.MetricsWindow`) for req/s, tokens/s, cost per minute, latency
  p50/p95, in-flight and circuit state; `run.updated` and `review.*` feed the run and review lists;
- frames of the dashboard websocket protocol (`apply_frame`, see dashboard/protocol.py): the
  server's own aggregated model figures (`metrics.tick`), run rows and review items.
Model status uses the dashboard's rule (`observability.model_status.model_status`), so both screens agree.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from observability.metrics_window import MetricsWindow
from observability.model_status import model_status
from orchestration.reviews.selectors import OPEN_STATUSES

WINDOW_S = 60
TICK_FRESH_S = 5.0  # a server's figures older than this give way to the local window
STATUS_NAMES = {"circuit_open": "circuit open"}


@dataclass
class ModelFigures:
    alias: str
    provider: str
    tier: str
    status: str  # healthy | degraded | circuit open | disabled
    circuit: str
    in_flight: int
    calls: int
    errors: int
    req_s: float
    tokens_s: float
    cost_per_min: float
    p50_ms: float | None
    p95_ms: float | None
    confidence: float | None = None  # of the model's latest answer
    confidence_method: str = ""  # how that was measured: logprobs, self_consistency, verifier, prior


@dataclass
class ModelTrack:
    alias: str
    provider: str = ""
    tier: str = ""
    enabled: bool = True
    tick: dict | None = None
    tick_at: float = 0.0
    confidence: float | None = None
    confidence_method: str = ""
    confidence_at: float = 0.0  # the answer's finish time: a late, older event does not replace a newer one


@dataclass
class RunRow:
    id: str
    target: str
    kind: str
    status: str
    cost_usd: float | None = None
    latency_ms: float | None = None
    updated_at: float = 0.0


@dataclass
class ReviewRow:
    id: str
    run_id: str
    status: str
    reason: str = ""
    created_at: float = 0.0


def epoch_seconds(value, default: float | None = None) -> float:
    """Epoch seconds from what events, database rows and APIs carry: epoch ms, epoch s, ISO strings or
    datetimes; `default` (now, when None) for a missing or unreadable value."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    elif isinstance(value, (int, float)) and value:
        return value / 1000 if value > 1e11 else float(value)  # 1e11 s is the year 5138; 1e11 ms is 1973
    return time.time() if default is None else default


class TopState:
    def __init__(self, *, window_s: int = WINDOW_S, max_runs: int = 10, clock=time.time):
        self.window_s = window_s
        self.max_runs = max_runs
        self.clock = clock
        self.window = MetricsWindow(span_s=max(window_s, 60), clock=clock)
        self.models: dict[str, ModelTrack] = {}
        self.runs: OrderedDict[str, RunRow] = OrderedDict()  # newest first
        self.reviews: dict[str, ReviewRow] = {}
        self.review_total: int | None = None  # from a snapshot that showed only the oldest items
        self.oldest_review_at: float | None = None  # likewise
        self.events_seen = 0
        self.last_event_at: float | None = None

    # --- loading a starting point ------------------------------------------------------------
    def load_models(self, rows: list[dict]) -> None:
        for row in rows:
            track = self._model(row["alias"])
            track.provider = row.get("provider") or track.provider
            track.tier = row.get("tier") or track.tier
            track.enabled = bool(row.get("enabled", True))

    def load_calls(self, rows: list[dict]) -> None:
        """Recent finished calls (model, ts in ms, status, tokens, cost, latency) to fill the window at start."""
        for row in sorted(rows, key=lambda r: r["ts"]):
            self.window.observe({"type": "step.finished", "node_type": "call", **row})
            self._note_confidence(self._model(row["model"]), row)

    def load_runs(self, rows: list[dict]) -> None:
        for row in reversed(rows):  # rows come newest first; insert oldest first so order is kept
            self._apply_run(row)

    def load_reviews(self, rows: list[dict], total: int | None = None, oldest_at: float | None = None) -> None:
        for row in rows:
            self._apply_review(row)
        self.review_total = total
        self.oldest_review_at = oldest_at

    # --- live events ----------------------------------------------------------------------------
    def apply(self, event: dict) -> bool:
        """Fold one event in; True when something on screen may have changed."""
        kind = event.get("type")
        self.events_seen += 1
        self.last_event_at = self.clock()
        if kind in ("step.started", "step.finished", "model.health") and event.get("model"):
            if event.get("node_type", "call") != "call":
                return False
            track = self._model(event["model"])
            self.window.observe(event)
            if kind == "step.finished":
                self._note_confidence(track, event)
            return True
        if kind == "run.updated" and event.get("run_id"):
            self._apply_run(event)
            return True
        if kind in ("review.created", "review.updated", "review.decided", "review.claimed", "review.expired"):
            self._apply_review(event)
            return True
        return False

    def apply_frame(self, frame: dict) -> bool:
        """Fold one frame of the dashboard protocol (snapshot, delta or metrics.tick) in."""
        topic = frame.get("topic")
        if frame.get("type") == "snapshot":
            data = frame.get("data") or {}
            values = data.get("values") or {}
            if topic == "runs":  # newest first; insert oldest first so the order holds
                rows = sorted((v for k, v in values.items() if k.startswith("run.") and isinstance(v, dict)),
                              key=lambda r: r.get("created_ts") or 0)
                for row in rows[-self.max_runs:]:
                    self._apply_run(row)
            if topic == "reviews":
                self.reviews.clear()
            metrics = data.get("metrics")
        elif frame.get("type") in ("delta", "metrics.tick"):
            values = frame.get("changes") or {}
            metrics = frame.get("metrics")
        else:
            return False
        self.events_seen += 1
        self.last_event_at = self.clock()
        for key, value in values.items():
            if key.startswith("run.") and topic == "runs" and isinstance(value, dict):
                if frame.get("type") != "snapshot":
                    self._apply_run(value)
            elif key.startswith("item.") and topic == "reviews":
                if isinstance(value, dict):
                    self._apply_review(value)
                else:
                    self.reviews.pop(key[len("item."):], None)
            elif key in ("counts", "backlog") and isinstance(value, dict):
                self.review_total = int(value.get("pending") or 0) + int(value.get("claimed") or 0)
                oldest = value.get("oldest_pending_ts")
                self.oldest_review_at = epoch_seconds(oldest) if oldest else None
        if isinstance(metrics, dict) and isinstance(metrics.get("models"), dict):
            self.apply_model_figures(metrics["models"])
        return True

    def _model(self, alias: str) -> ModelTrack:
        track = self.models.get(alias)
        if track is None:
            track = self.models[alias] = ModelTrack(alias=alias)
        return track

    def _note_confidence(self, track: ModelTrack, finished: dict) -> None:
        """The latest answer's confidence and how it was measured (no method recorded: the registry's prior)."""
        if finished.get("confidence") is None:
            return
        at = epoch_seconds(finished.get("ts"), default=self.clock())
        if at >= track.confidence_at:
            track.confidence, track.confidence_at = float(finished["confidence"]), at
            track.confidence_method = finished.get("confidence_method") or "prior"

    def _apply_run(self, event: dict) -> None:
        run_id = str(event.get("run_id") or event.get("id"))
        row = self.runs.get(run_id)
        if row is None:
            row = RunRow(id=run_id, target=event.get("target") or "", kind=event.get("kind") or "",
                         status=event.get("status") or "")
            self.runs[run_id] = row
            self.runs.move_to_end(run_id, last=False)
            while len(self.runs) > self.max_runs:
                self.runs.popitem(last=True)
        row.status = event.get("status") or row.status
        row.target = event.get("target") or row.target
        for name in ("cost_usd", "latency_ms"):
            if event.get(name) is not None:
                setattr(row, name, float(event[name]))
        seen = event.get("finished_ts") or event.get("created_ts") or event.get("ts")
        row.updated_at = max(row.updated_at, epoch_seconds(seen) if seen else self.clock())

    def _apply_review(self, event: dict) -> None:
        review_id = str(event.get("review_id") or event.get("id"))
        status = event.get("status") or "pending"
        if status not in OPEN_STATUSES:
            if self.reviews.pop(review_id, None) is not None and self.review_total:
                self.review_total -= 1
            return
        row = self.reviews.get(review_id)
        if row is None:
            row = self.reviews[review_id] = ReviewRow(
                id=review_id, run_id=str(event.get("run_id") or event.get("run") or ""), status=status,
                reason=event.get("reason") or "", created_at=epoch_seconds(event.get("created_at") or event.get("created_ts") or event.get("ts")))
            if self.review_total is not None and event.get("type") == "review.created":
                self.review_total += 1
        row.status = status

    def apply_model_figures(self, models: dict) -> None:
        """A server's aggregated figures: {alias: {req_per_s, …, status}} as in `metrics.tick`."""
        now = self.clock()
        for alias, figures in models.items():
            if isinstance(figures, dict):
                track = self._model(alias)
                track.tick, track.tick_at = figures, now
                track.provider = figures.get("provider") or track.provider
                track.tier = figures.get("tier") or track.tier
                if "enabled" in figures:
                    track.enabled = bool(figures["enabled"])

    # --- what the screen shows ----------------------------------------------------------------
    def figures(self) -> list[ModelFigures]:
        now = self.clock()
        local = self.window.model_metrics(window_s=self.window_s, now=now)
        for alias in local:
            self._model(alias)
        rows = []
        for alias, track in sorted(self.models.items()):
            figures = dict(local.get(alias) or {})
            if track.tick is not None and now - track.tick_at <= TICK_FRESH_S:
                figures.update({k: v for k, v in track.tick.items() if v is not None})
            rows.append(self._figures(track, figures))
        return rows

    def _figures(self, track: ModelTrack, figures: dict) -> ModelFigures:
        row = ModelFigures(
            alias=track.alias, provider=track.provider, tier=track.tier, status="",
            circuit=figures.get("circuit") or "closed", in_flight=int(figures.get("in_flight") or 0),
            calls=int(figures.get("calls") or 0), errors=int(figures.get("failures") or 0),
            req_s=float(figures.get("req_per_s") or 0.0), tokens_s=float(figures.get("tokens_per_s") or 0.0),
            cost_per_min=float(figures.get("cost_per_min") or 0.0), p50_ms=figures.get("latency_p50_ms"),
            p95_ms=figures.get("latency_p95_ms"), confidence=track.confidence,
            confidence_method=track.confidence_method)

        status = figures.get("status") or model_status(track.enabled, figures)
        row.status = STATUS_NAMES.get(status, status)
        return row

    def latest_runs(self) -> list[RunRow]:
        return list(self.runs.values())

    def backlog(self) -> tuple[int, float | None, list[ReviewRow]]:
        """(open items, age in seconds of the oldest, the oldest few)."""
        rows = sorted(self.reviews.values(), key=lambda r: r.created_at)
        count = max(len(rows), self.review_total or 0)
        first = min([r.created_at for r in rows[:1]] + ([self.oldest_review_at] if self.oldest_review_at else []),
                    default=None)
        return count, (self.clock() - first if first is not None else None), rows[:8]
