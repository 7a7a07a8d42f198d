"""The review pages: the live queue and one item. Decisions go through /api/reviews/ (static/dashboard/reviews.js).

Members of a team see the reviews of their team's runs (a superuser every one; dashboard/access.py); another
team's item is a 404. Reviewers and admins of the run's team (and superusers) may decide: the buttons are
hidden for viewers, and the API refuses their decisions. Everything a model wrote is rendered as text.
"""
import json

from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404, render

from dashboard.access import control_room
from orchestration.engine.confidence import describe
from orchestration.models import ReviewItem
from orchestration.reviews.selectors import (DECIDED_STATUSES, OPEN_STATUSES, best_candidate_index, decider_label,
                                             released, review_summary)

RECENTLY_DECIDED = 25


def _items(request):
    """The review items of the teams the page shows."""
    items = ReviewItem.objects.select_related("run", "assignee", "decided_by", "decided_by_key")
    return request.teams.filter(items, "run__team")


@control_room
def review_queue(request):
    """Open items arrive over the `reviews` topic; recent decisions are rendered once."""
    recent = _items(request).filter(status__in=DECIDED_STATUSES).order_by("-decided_at")[:RECENTLY_DECIDED]
    return render(request, "dashboard/review_queue.html", {
        "recent": [review_summary(item) for item in recent], "teams": request.teams,
        "may_decide": request.teams.may_decide_any, "decide_teams": request.teams.decide_teams,
        "csrf": get_token(request)})


@control_room
def review_detail(request, review_id):
    item = get_object_or_404(_items(request), pk=review_id)
    open_items = (request.teams.filter(ReviewItem.objects.filter(status__in=OPEN_STATUSES), "run__team")
                  .exclude(pk=item.pk).values_list("pk", flat=True))
    previous = open_items.filter(created_at__lt=item.created_at).order_by("-created_at").first()
    following = open_items.filter(created_at__gte=item.created_at).order_by("created_at").first()
    best = best_candidate_index(item.candidates)
    candidates = [{**candidate, "index": index, "best": index == best, "how_sure": how_sure(candidate)}
                  for index, candidate in enumerate(item.candidates or [])]
    decided = item.status in DECIDED_STATUSES
    page = {  # read by reviews.js (json_script escapes it for the page)
        "review_id": str(item.id), "run_id": str(item.run_id), "status": item.status,
        "assignee": item.assignee.get_username() if item.assignee_id else None, "me": request.user.get_username(),
        "best_index": best, "chosen_index": item.chosen_index, "outputs": [c["output"] for c in candidates],
        "previous": str(previous) if previous else None, "next": str(following) if following else None,
    }
    return render(request, "dashboard/review_detail.html", {
        "item": item, "candidates": candidates, "messages_in": _messages(item.request), "decided": decided,
        "gate_rule": gate_rule(item.request), "why": _why(item.request),
        "request_json": json.dumps(item.request, indent=2, ensure_ascii=False, default=str),
        "decided_by": decider_label(item), "released": released(item)[0], "page": page,
        "may_decide": request.teams.may_decide(item.run.team_id), "csrf": get_token(request),
        "previous": previous, "next": following, "teams": request.teams})


def how_sure(candidate: dict) -> str:
    """The candidate's "how sure, measured how" sentence; built from its fields for items that predate it."""
    if isinstance(candidate.get("how_sure"), str) and candidate["how_sure"]:
        return candidate["how_sure"]
    method = candidate.get("confidence_method") or "prior"  # no method recorded: the registry's prior
    confidence = _number(candidate.get("confidence"))
    raw = _number(candidate.get("confidence_raw"))
    raw = raw if raw is not None else confidence
    if raw is None:  # nothing recorded but (maybe) the method
        return "Not measured: the model's prior" if method == "prior" else f"Measured by {method}: no signal recorded"
    labels = _number(candidate.get("calibration_labels"))
    return describe(method, raw, confidence, bool(candidate.get("calibrated")), int(labels) if labels else None)


def gate_rule(request) -> str:
    """The gate's rule in words: a target risk ("at most 2 % wrong") or a plain confidence threshold."""
    if not isinstance(request, dict):
        return ""
    if (target := _number(request.get("max_error_rate"))) is not None:
        return f"target: at most {target * 100:g} % wrong"
    if (threshold := _number(request.get("threshold"))) is not None:
        return f"threshold {threshold:.2f}"
    return ""


def _why(request) -> str:
    return request["why"] if isinstance(request, dict) and isinstance(request.get("why"), str) else ""


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _messages(request: dict) -> list[dict]:
    """The gated request as (role, text) pairs; other request fields are shown as JSON by the template."""
    if not isinstance(request, dict):
        return []
    messages = request.get("messages")
    if not isinstance(messages, list):  # a gate's request: the run's input, the prompt its model saw, and why
        shown = [{"role": name, "content": request[name]} for name in ("input", "prompt", "text")
                 if isinstance(request.get(name), str) and request[name]]
        # (`why` is shown with the gate's rule in the item's summary)
        return [m for i, m in enumerate(shown) if m["content"] not in [s["content"] for s in shown[:i]]]
    shown = []
    for message in messages:
        if isinstance(message, dict):
            content = message.get("content")
            if isinstance(content, list):
                content = "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
            shown.append({"role": str(message.get("role", "")), "content": "" if content is None else str(content)})
    return shown
