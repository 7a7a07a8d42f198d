"""The review pages: the live queue and one item. Decisions go through /api/reviews/ (static/dashboard/reviews.js).

Staff and reviewers may look; the buttons work for members of the `reviewers` group only (the API
enforces it; the page just says so). Everything a model wrote is rendered as text.
"""
import json

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404, render
from django.urls import reverse

from orchestration.models import ReviewItem
from orchestration.reviews.selectors import (DECIDE_PERMISSION, DECIDED_STATUSES, OPEN_STATUSES, best_candidate_index,
                                             decider_label, may_view, released, review_summary)

RECENTLY_DECIDED = 25


def reviewer_page(view):
    """Log in first (the admin's login page), then staff or reviewers only."""
    def wrapped(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path(), reverse("admin:login"))
        if not may_view(request.user):
            raise PermissionDenied("Only staff and reviewers may see the review queue.")
        return view(request, *args, **kwargs)
    wrapped.__name__ = view.__name__
    wrapped.__doc__ = view.__doc__
    return wrapped


def _items():
    return ReviewItem.objects.select_related("run", "assignee", "decided_by", "decided_by_key")


@reviewer_page
def review_queue(request):
    """Open items arrive over the `reviews` topic; recent decisions are rendered once."""
    recent = _items().filter(status__in=DECIDED_STATUSES).order_by("-decided_at")[:RECENTLY_DECIDED]
    return render(request, "dashboard/review_queue.html", {
        "recent": [review_summary(item) for item in recent],
        "may_decide": request.user.has_perm(DECIDE_PERMISSION), "csrf": get_token(request)})


@reviewer_page
def review_detail(request, review_id):
    item = get_object_or_404(_items(), pk=review_id)
    open_items = (ReviewItem.objects.filter(status__in=OPEN_STATUSES).exclude(pk=item.pk)
                  .values_list("pk", flat=True))
    previous = open_items.filter(created_at__lt=item.created_at).order_by("-created_at").first()
    following = open_items.filter(created_at__gte=item.created_at).order_by("created_at").first()
    best = best_candidate_index(item.candidates)
    candidates = [{**candidate, "index": index, "best": index == best}
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
        "request_json": json.dumps(item.request, indent=2, ensure_ascii=False, default=str),
        "decided_by": decider_label(item), "released": released(item)[0], "page": page,
        "may_decide": request.user.has_perm(DECIDE_PERMISSION), "csrf": get_token(request),
        "previous": previous, "next": following})


def _messages(request: dict) -> list[dict]:
    """The gated request as (role, text) pairs; other request fields are shown as JSON by the template."""
    if not isinstance(request, dict):
        return []
    messages = request.get("messages")
    if not isinstance(messages, list):  # a gate's request: the run's input, the prompt its model saw, and why
        shown = [{"role": name, "content": request[name]} for name in ("input", "prompt", "text")
                 if isinstance(request.get(name), str) and request[name]]
        unique = [m for i, m in enumerate(shown) if m["content"] not in [s["content"] for s in shown[:i]]]
        if isinstance(request.get("why"), str):
            unique.append({"role": "why it was gated", "content": request["why"]})
        return unique
    shown = []
    for message in messages:
        if isinstance(message, dict):
            content = message.get("content")
            if isinstance(content, list):
                content = "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
            shown.append({"role": str(message.get("role", "")), "content": "" if content is None else str(content)})
    return shown
