"""Helpers for review-queue tests: paused runs, open items, more reviewers, captured live events."""
from __future__ import annotations

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from orchestration.live import EVENTS_GROUP, events_in
from orchestration.models import Run
from orchestration.models.runs import RunStatus
from orchestration.reviews.actions import open_review

CANDIDATES = [
    {"model": "swift-mini", "output": "Paris is the capital of France.", "confidence": 0.55, "cost_usd": 0.0001},
    {"model": "atlas-pro", "output": "The capital of France is Paris.", "confidence": 0.62, "cost_usd": 0.002},
]


def paused_run(**fields) -> Run:
    return Run.objects.create(kind=Run.Kind.WORKFLOW, target="workflow/gated", status=RunStatus.AWAITING_REVIEW,
                              input={"messages": [{"role": "user", "content": "capital of France?"}]},
                              created_at=timezone.now(), **fields)


def open_item(run: Run | None = None, **overrides):
    run = run or paused_run()
    arguments = {"run_id": run.id, "step_key": "gate", "node_id": "gate", "reason": "low_confidence",
                 "request": {"messages": [{"role": "user", "content": "capital of France?"}], "category": "chat"},
                 "candidates": CANDIDATES, "due_in_s": 3600, "default_action": "approve"}
    arguments.update(overrides)
    return open_review(**arguments)


def another_reviewer(username: str):
    user = get_user_model().objects.create_user(username, password=f"{username}-password-1", is_staff=True)
    user.groups.add(Group.objects.get(name="reviewers"))
    return user


class EventTap:
    """Joins the live events group on the in-memory channel layer and collects what arrives."""

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.channel = async_to_sync(self.layer.new_channel)()
        async_to_sync(self.layer.group_add)(EVENTS_GROUP, self.channel)

    def drain(self) -> list[dict]:
        events = []

        async def collect():
            import asyncio
            while True:
                try:
                    message = await asyncio.wait_for(self.layer.receive(self.channel), 0.05)
                except asyncio.TimeoutError:
                    return
                events.extend(events_in(message))

        async_to_sync(collect)()
        return events

    def close(self) -> None:
        async_to_sync(self.layer.group_discard)(EVENTS_GROUP, self.channel)
