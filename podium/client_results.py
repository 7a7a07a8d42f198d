"""Typed results and errors of `podium.client` (importable without Django, like the client)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "budget_exceeded", "deadline_exceeded"})
# A run waiting for a person will not move by itself: waiting longer only wastes the caller's time.
SETTLED_STATUSES = FINAL_STATUSES | {"awaiting_review"}




def _float(value: Any) -> float | None:
    # DRF renders decimals as strings ("0.00001200"); the live events use numbers.
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Step:
    id: str
    key: str
    node_id: str
    node_type: str
    model: str
    status: str
    output: str = ""
    error: str = ""
    confidence: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    latency_ms: float | None = None
    parent_id: str | None = None
    attributes: dict = field(default_factory=dict)
    started_at: str | None = None
    finished_at: str | None = None

    @classmethod
    def from_api(cls, data: dict) -> "Step":
        return cls(
            id=str(data.get("id") or data.get("step_id") or ""), key=data.get("key") or "",
            node_id=data.get("node_id") or "", node_type=data.get("node_type") or "call",
            model=data.get("model_alias") or data.get("model") or "", status=data.get("status") or "",
            output=data.get("output") or "", error=data.get("error") or "",
            confidence=_float(data.get("confidence")), tokens_in=int(data.get("tokens_in") or 0),
            tokens_out=int(data.get("tokens_out") or 0), cost_usd=_float(data.get("cost_usd")) or 0.0,
            latency_ms=_float(data.get("latency_ms")),
            parent_id=str(data["parent"]) if data.get("parent") else data.get("parent_id"),
            attributes=dict(data.get("attributes") or {}),
            started_at=data.get("started_at"), finished_at=data.get("finished_at"),
        )


@dataclass(frozen=True)
class Run:
    id: str
    status: str
    target: str = ""
    kind: str = ""
    output: str = ""
    error: str = ""
    confidence: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    latency_ms: float | None = None
    metadata: dict = field(default_factory=dict)
    created_at: str | None = None
    finished_at: str | None = None
    steps: tuple[Step, ...] = ()
    raw: dict = field(default_factory=dict, repr=False, compare=False)  # the server's JSON, for fields added later

    @classmethod
    def from_api(cls, data: dict) -> "Run":
        return cls(
            id=str(data.get("id") or data.get("run_id") or ""), status=data.get("status") or "",
            target=data.get("target") or "", kind=data.get("kind") or "", output=data.get("output") or "",
            error=data.get("error") or "", confidence=_float(data.get("confidence")),
            tokens_in=int(data.get("tokens_in") or 0), tokens_out=int(data.get("tokens_out") or 0),
            cost_usd=_float(data.get("cost_usd")) or 0.0, latency_ms=_float(data.get("latency_ms")),
            metadata=dict(data.get("metadata") or {}), created_at=data.get("created_at"),
            finished_at=data.get("finished_at"),
            steps=tuple(Step.from_api(s) for s in data.get("steps") or () if isinstance(s, dict)),
            raw=data,
        )

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def is_settled(self) -> bool:
        """Final, or waiting for a person: nothing more happens without someone acting."""
        return self.status in SETTLED_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    @property
    def awaiting_review(self) -> bool:
        return self.status == "awaiting_review"


@dataclass(frozen=True)
class Review:
    id: str
    run_id: str
    status: str
    reason: str = ""
    node_id: str = ""
    candidates: tuple[dict, ...] = ()
    assignee: str | None = None
    decided_by: str | None = None
    chosen_index: int | None = None
    edited_output: str = ""
    comment: str = ""
    created_at: str | None = None
    due_at: str | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, data: dict) -> "Review":
        run = data.get("run") or data.get("run_id") or ""
        return cls(
            id=str(data.get("id") or data.get("review_id") or ""),
            run_id=str(run.get("id") if isinstance(run, dict) else run), status=data.get("status") or "",
            reason=data.get("reason") or "", node_id=data.get("node_id") or "",
            candidates=tuple(c for c in data.get("candidates") or () if isinstance(c, dict)),
            assignee=str(data["assignee"]) if data.get("assignee") else None,
            decided_by=str(data["decided_by"]) if data.get("decided_by") else None,
            chosen_index=data.get("chosen_index"), edited_output=data.get("edited_output") or "",
            comment=data.get("comment") or "",
            created_at=data.get("created_at"), due_at=data.get("due_at"), raw=data,
        )


# --- errors ---------------------------------------------------------------------------------------------

class PodiumError(Exception):
    """Podium refused or failed a request. `status` is the HTTP status (None when it never answered)."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "", body: Any = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.message, self.status, self.code, self.body, self.retry_after = message, status, code, body, retry_after


class WaitTimeout(PodiumError, TimeoutError):
    """The run did not settle within the timeout; `run` is its last known state."""

    def __init__(self, message: str, run: Run):
        super().__init__(message)
        self.run = run
