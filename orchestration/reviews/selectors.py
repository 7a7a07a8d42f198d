"""Reading the review queue: the one row shape, the one backlog query, the decisions a run resumes with."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Min, Q

from orchestration.engine.events import ReviewSummary
from orchestration.models import ReviewItem

Status = ReviewItem.Status
OPEN_STATUSES = (Status.PENDING, Status.CLAIMED)  # the one definition: the queue, the backlog, the API's open=true
DECIDED_STATUSES = (Status.APPROVED, Status.EDITED, Status.REJECTED, Status.EXPIRED)
DECIDE_PERMISSION = "orchestration.decide_reviewitem"
ACTION_BY_STATUS = {Status.APPROVED: "approve", Status.EDITED: "edit", Status.REJECTED: "reject"}
CANDIDATE_PREVIEW_CHARS = 120


def may_view(user) -> bool:
    """Staff see the queue; reviewers see it even without staff status."""
    return bool(user and user.is_authenticated and user.is_active
                and (user.is_staff or user.has_perm(DECIDE_PERMISSION)))



def review_summary(item: ReviewItem) -> ReviewSummary:
    """An item as live events and the review pages describe it (ids, status, people, times, models). No secret."""
    candidates = item.candidates or []
    best = best_candidate_index(candidates)
    return {
        "review_id": str(item.id), "run_id": str(item.run_id), "status": item.status, "reason": item.reason,
        "category": item.category, "node_id": item.node_id, "step_key": item.step_key,
        "assignee": item.assignee.get_username() if item.assignee_id else None,
        "decided_by": decider_label(item),
        "created_ts": _ms(item.created_at), "due_ts": _ms(item.due_at), "claimed_ts": _ms(item.claimed_at),
        "decided_ts": _ms(item.decided_at),
        "models": [c.get("model", "") for c in candidates],
        "best_model": candidates[best].get("model", "") if best is not None else "",
        "best_confidence": candidates[best].get("confidence") if best is not None else None,
        "preview": request_preview(item.request),
    }


def decider_label(item: ReviewItem) -> str | None:
    if item.decided_by_id:
        return item.decided_by.get_username()
    if item.decided_by_key_id:
        return f"key:{item.decided_by_key.prefix}"
    if item.status == Status.EXPIRED:
        return "system"
    return None


def request_preview(request: dict, limit: int = 200) -> str:
    """The last user message (or the input text) of a gated request, shortened for a queue row."""
    if not isinstance(request, dict):
        return ""
    messages = request.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                return message["content"][:limit]
    for name in ("input", "prompt", "text"):
        if isinstance(request.get(name), str):
            return request[name][:limit]
    return ""


def best_candidate_index(candidates: list[dict]) -> int | None:
    """The most confident candidate (the first on ties): what "approve" releases by default."""
    if not candidates:
        return None
    return max(range(len(candidates)), key=lambda i: (_float(candidates[i].get("confidence")), -i))



def review_row(item: ReviewItem) -> dict:
    """The one row shape of a review item, for the live reviews topic and the review pages: its summary and
    a preview of each candidate. (Live review events carry the summary alone.)"""
    return {**review_summary(item),
            "candidates": [{"model": c.get("model", ""), "confidence": c.get("confidence"),
                            "cost_usd": c.get("cost_usd"), "preview": str(c.get("output", ""))[:CANDIDATE_PREVIEW_CHARS]}
                           for c in (item.candidates or []) if isinstance(c, dict)]}


@dataclass(frozen=True)
class Backlog:
    pending: int
    claimed: int
    oldest_pending_at: datetime | None
    oldest_open_at: datetime | None

    @property
    def open(self) -> int:
        return self.pending + self.claimed

    def live(self) -> dict:
        """As the overview and the reviews topic show it."""
        return {"pending": self.pending, "claimed": self.claimed, "oldest_pending_ts": _ms(self.oldest_pending_at)}


def review_backlog() -> Backlog:
    """The review backlog: open items by status and the oldest pending and open ones; one query."""
    row = ReviewItem.objects.aggregate(
        pending=Count("id", filter=Q(status=Status.PENDING)), claimed=Count("id", filter=Q(status=Status.CLAIMED)),
        oldest_pending=Min("created_at", filter=Q(status=Status.PENDING)),
        oldest_open=Min("created_at", filter=Q(status__in=OPEN_STATUSES)))
    return Backlog(pending=row["pending"], claimed=row["claimed"], oldest_pending_at=row["oldest_pending"],
                   oldest_open_at=row["oldest_open"])


def decisions_for_run(run_id) -> dict[str, dict]:
    """The decided gates of one run, keyed by step key, for the engine to apply on resume.

    `action` is approve | edit | reject; `output` is the text to release ("" on reject). An expired
    item carries its default action: approve releases the best candidate; reject and escalate both
    come back as reject, escalate with `"escalate": True` so a gate whose reject policy is "fail"
    can still escalate. When one gate was reviewed twice (escalated, then gated again), the latest wins.
    """
    decisions: dict[str, dict] = {}
    items = (ReviewItem.objects.filter(run_id=run_id, status__in=DECIDED_STATUSES)
             .select_related("decided_by", "decided_by_key").order_by("decided_at"))
    for item in items:
        action, escalate = _decided_action(item)
        output, model = released(item)
        decisions[item.step_key or item.node_id] = {
            "action": action, "output": output, "reviewer": decider_label(item) or "system",
            "review_id": str(item.id), "model": model, "comment": item.comment,
            "expired": item.status == Status.EXPIRED, "escalate": escalate,
        }
    return decisions


def released(item: ReviewItem) -> tuple[str, str]:
    """(the text a decided item released, the model of the candidate chosen or edited); "" when none."""
    candidates = item.candidates or []
    index = item.chosen_index
    chosen = candidates[index] if index is not None and index < len(candidates) else {}
    if item.status == Status.EDITED:
        return item.edited_output, chosen.get("model", "")
    if item.status in (Status.APPROVED, Status.EXPIRED):
        return chosen.get("output", ""), chosen.get("model", "")
    return "", chosen.get("model", "")


def _decided_action(item: ReviewItem) -> tuple[str, bool]:
    if item.status != Status.EXPIRED:
        return ACTION_BY_STATUS[item.status], False
    if item.default_action == ReviewItem.DefaultAction.APPROVE and item.chosen_index is not None:
        return "approve", False
    return "reject", item.default_action == ReviewItem.DefaultAction.ESCALATE



def _ms(value: datetime | None) -> int | None:
    return int(value.timestamp() * 1000) if value else None


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0
