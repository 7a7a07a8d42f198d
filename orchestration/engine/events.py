"""Live events: their types, the builders every publisher uses, and the sink the engine reports through.

An event is a plain dict `{"type": ..., "ts": <epoch ms>, ...}`: cheap to build on the /v1 hot path, to
send through the channel layer and to read. The TypedDicts below say which fields each type carries; a
`NotRequired` field is either present with a value or absent, never None unless its type says so. Every
event is built by a builder here (tests/eventschema.py checks each one the test suite publishes), and
publishers add `origin` and `oseq` on the way out (observability/origin.py). The Django side implements
the sink (runs/sink.py, gateway/chat.py) and publishes through `orchestration.live`.
"""
# No `from __future__ import annotations` here: a TypedDict must see NotRequired[...] as a type, not as a string,
# to tell its optional keys from its required ones.
import time
from typing import Any, Literal, NotRequired, Protocol

# typing_extensions' TypedDict is typing's on Python 3.12+; on 3.11 it is the one pydantic (the schema test) reads.
from typing_extensions import TypedDict

# The step attributes a run's step shows as markers (dashboard/snapshots.py) and keeps on its row
# (recording.py); fallback_from and tokens_estimated may come as top-level fields of a step event too.
STEP_MARKERS = ("cached", "redacted", "retries", "fallback_from", "reason", "iteration", "branch", "tokens_estimated")

RunStatus = Literal["queued", "running", "succeeded", "failed", "awaiting_review", "cancelled", "budget_exceeded",
                    "deadline_exceeded"]  # models.runs.RunStatus (tests/test_event_schema.py keeps them equal)
FinishedStepStatus = Literal["succeeded", "failed", "cancelled"]
ReviewStatus = Literal["pending", "claimed", "approved", "edited", "rejected", "expired"]
CircuitState = Literal["closed", "open", "half_open"]


def now_ms() -> int:
    return int(time.time() * 1000)


class Stamped(TypedDict, total=False):
    """Added by the publishing process (observability/origin.py), so a receiver can tell an event was lost."""
    origin: str
    oseq: int


class StepIdentity(TypedDict):
    """Which step an event is about: the part a step's started and finished events share."""
    run_id: str
    step_id: str
    parent_id: str | None
    key: str  # unique within the run; a fallback's is `<key>.fallback<n>`
    node_id: str
    node_type: str  # call, embeddings, human, or the workflow node type of a span
    model: str  # alias, "" for a span that called no model itself
    provider: str


class StepStarted(StepIdentity, Stamped):
    type: Literal["step.started"]
    ts: float
    team: NotRequired[int | None]  # the run's team id (None: no team), added by the publishing sink (with_team)
    prompt: list[dict[str, Any]]  # as sent, after redaction; [] for a span
    attributes: NotRequired[dict[str, Any]]
    fallback_from: NotRequired[str]


class StepFinished(StepIdentity, Stamped):
    type: Literal["step.finished"]
    ts: float
    team: NotRequired[int | None]  # as StepStarted's
    started_ts: float
    status: FinishedStepStatus
    output: str  # model output: untrusted text
    error: str
    confidence: float | None
    tokens_in: int
    tokens_out: int
    cost_usd: float
    latency_ms: float | None
    attributes: dict[str, Any]
    prompt: NotRequired[list[dict[str, Any]]]
    tokens_estimated: NotRequired[bool]
    fallback_from: NotRequired[str]
    confidence_method: NotRequired[str]  # logprobs, self_consistency, verifier, prior (engine/confidence.py)
    confidence_raw: NotRequired[float | None]  # the signal before calibration


class RunUpdated(Stamped):
    type: Literal["run.updated"]
    ts: float
    run_id: str
    status: RunStatus
    target: str
    kind: str  # chat, workflow, embeddings
    api_key: str  # the key's prefix, never the key
    team: int | None  # the run's team id; None = a run with no team (seen only by all-teams watchers)
    cost_usd: NotRequired[float]
    tokens_in: NotRequired[int]
    tokens_out: NotRequired[int]
    latency_ms: NotRequired[float]
    confidence: NotRequired[float]


class ReviewSummary(TypedDict):
    """A review item as live events and the review pages describe it (reviews/selectors.review_summary)."""
    review_id: str
    run_id: str
    status: ReviewStatus
    reason: str
    category: str
    node_id: str
    step_key: str
    assignee: str | None
    decided_by: str | None
    created_ts: int | None
    due_ts: int | None
    claimed_ts: int | None
    decided_ts: int | None
    models: list[str]
    best_model: str
    best_confidence: float | None
    preview: str


class ReviewCreated(ReviewSummary, Stamped):
    type: Literal["review.created"]
    ts: float


class ReviewUpdated(ReviewSummary, Stamped):
    type: Literal["review.updated"]
    ts: float
    change: Literal["claimed", "released", "claim_lapsed"]
    previous_assignee: NotRequired[str]


class ReviewDecided(ReviewSummary, Stamped):
    type: Literal["review.decided"]
    ts: float
    action: Literal["approve", "edit", "reject"]
    output: str  # what the run goes on with
    comment: NotRequired[str]
    expired: NotRequired[bool]


class ModelHealth(Stamped):
    type: Literal["model.health"]
    ts: float
    model: str
    state: CircuitState
    in_flight: int


Event = StepStarted | StepFinished | RunUpdated | ReviewCreated | ReviewUpdated | ReviewDecided | ModelHealth
EVENT_TYPES: dict[str, type] = {
    "step.started": StepStarted, "step.finished": StepFinished, "run.updated": RunUpdated,
    "review.created": ReviewCreated, "review.updated": ReviewUpdated, "review.decided": ReviewDecided,
    "model.health": ModelHealth,
}


# --- builders: keyword-only; an optional field left at None is left out ------------------------------------------

def step_started(*, step: StepIdentity, ts: float, prompt: list[dict], attributes: dict | None = None,
                 fallback_from: str | None = None) -> StepStarted:
    event = {"type": "step.started", "ts": ts, **step, "prompt": prompt}
    if attributes is not None:
        event["attributes"] = attributes
    if fallback_from is not None:
        event["fallback_from"] = fallback_from
    return event


def step_finished(*, step: StepIdentity, ts: float, started_ts: float, status: FinishedStepStatus, output: str,
                  error: str, confidence: float | None, tokens_in: int, tokens_out: int, cost_usd: float,
                  latency_ms: float | None, attributes: dict, prompt: list[dict] | None = None,
                  tokens_estimated: bool | None = None, fallback_from: str | None = None,
                  confidence_method: str | None = None, confidence_raw: float | None = None) -> StepFinished:
    event = {"type": "step.finished", "ts": ts, **step, "started_ts": started_ts, "status": status,
             "output": output, "error": error, "confidence": confidence, "tokens_in": tokens_in,
             "tokens_out": tokens_out, "cost_usd": cost_usd, "latency_ms": latency_ms, "attributes": attributes}
    if prompt is not None:
        event["prompt"] = prompt
    if tokens_estimated is not None:
        event["tokens_estimated"] = tokens_estimated
    if fallback_from is not None:
        event["fallback_from"] = fallback_from
    if confidence_method:
        event["confidence_method"], event["confidence_raw"] = confidence_method, confidence_raw
    return event


def with_team(event: StepStarted | StepFinished, team: int | None) -> StepStarted | StepFinished:
    """A step event as published: stamped with its run's team, so the dashboard hub shows it only to watchers
    of that team. The engine does not know teams; the sink publishing a run's events does."""
    return {**event, "team": team}


def run_updated(*, run_id: str, status: RunStatus, target: str, kind: str, api_key: str, team: int | None,
                ts: float | None = None,
                cost_usd: float | None = None, tokens_in: int | None = None, tokens_out: int | None = None,
                latency_ms: float | None = None, confidence: float | None = None) -> RunUpdated:
    """Where a run stands; the totals once they are known (a /v1 call's at its end, a workflow run's as it goes)."""
    event = {"type": "run.updated", "ts": now_ms() if ts is None else ts, "run_id": run_id, "status": status,
             "target": target, "kind": kind, "api_key": api_key, "team": team}
    if cost_usd is not None:
        event["cost_usd"] = cost_usd
    if tokens_in is not None:
        event["tokens_in"] = tokens_in
    if tokens_out is not None:
        event["tokens_out"] = tokens_out
    if latency_ms is not None:
        event["latency_ms"] = latency_ms
    if confidence is not None:
        event["confidence"] = confidence
    return event


def review_created(*, review: ReviewSummary) -> ReviewCreated:
    return {"type": "review.created", "ts": now_ms(), **review}


def review_updated(*, review: ReviewSummary, change: Literal["claimed", "released", "claim_lapsed"],
                   previous_assignee: str | None = None) -> ReviewUpdated:
    event = {"type": "review.updated", "ts": now_ms(), **review, "change": change}
    if previous_assignee is not None:
        event["previous_assignee"] = previous_assignee
    return event


def review_decided(*, review: ReviewSummary, action: Literal["approve", "edit", "reject"], output: str,
                   comment: str | None = None, expired: bool = False) -> ReviewDecided:
    event = {"type": "review.decided", "ts": now_ms(), **review, "action": action, "output": output}
    if comment is not None:
        event["comment"] = comment
    if expired:
        event["expired"] = True
    return event


def model_health(*, model: str, state: CircuitState, in_flight: int) -> ModelHealth:
    return {"type": "model.health", "ts": now_ms(), "model": model, "state": state, "in_flight": in_flight}


# --- the sink -------------------------------------------------------------------------------------------------

class EventSink(Protocol):
    """Receives every event of a run. Must not raise and must not block for long."""

    def emit(self, event: Event) -> None: ...


class ListSink:
    """Collects events in memory: for tests and for callers that only want the result."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)
