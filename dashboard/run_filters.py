"""The runs page: filters and cursor paging (a page stays put while new runs arrive on top)."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from django import forms
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from orchestration.access.watching import callable_targets
from orchestration.models import APIKey, LLMModel, Run, Step, Workflow
from orchestration.models.runs import RunStatus

PAGE_SIZE = 50
RANGES = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "24h": timedelta(hours=24),
          "7d": timedelta(days=7)}


class RunFilterForm(forms.Form):
    team = forms.ChoiceField(required=False)
    status = forms.ChoiceField(required=False, choices=[("", "any status")] + list(RunStatus.choices))
    model = forms.ChoiceField(required=False)
    workflow = forms.ChoiceField(required=False)
    api_key = forms.ChoiceField(required=False, label="API key")
    range = forms.ChoiceField(required=False, label="Time range", choices=[
        ("", "all time"), ("15m", "last 15 minutes"), ("1h", "last hour"), ("24h", "last 24 hours"),
        ("7d", "last 7 days")])

    def __init__(self, *args, teams, **kwargs):
        """`teams`: the page's PageScope (dashboard/access.py); the choices offer only what it shows."""
        super().__init__(*args, **kwargs)
        # The team itself is applied by the page's scope (?team=); the field only offers the choice.
        self.fields["team"].choices = [("", "all my teams" if not teams.person.everything else "all teams")] + [
            (team.slug, team.name or team.slug) for team in teams.choices]
        targets = callable_targets(teams.teams)
        models = LLMModel.objects.order_by("alias")
        if targets is not None:
            models = models.filter(alias__in=targets)
        self.fields["model"].choices = [("", "any model")] + [
            (alias, alias) for alias in models.values_list("alias", flat=True)]
        workflows = teams.filter(Workflow.objects.order_by("slug"), "team", shared=True)
        self.fields["workflow"].choices = [("", "any workflow")] + [
            (slug, slug) for slug in workflows.values_list("slug", flat=True)]
        self.keys = list(teams.filter(APIKey.objects.order_by("name"), "team").values("id", "name", "prefix"))
        self.fields["api_key"].choices = [("", "any key")] + [
            (str(k["id"]), f"{k['name']} ({k['prefix']}…)") for k in self.keys]

    def live_filter(self) -> dict:
        """The filters as the page's script applies them to runs arriving live."""
        data = self.cleaned_data if self.is_valid() else {}
        prefix = next((k["prefix"] for k in self.keys if str(k["id"]) == data.get("api_key")), "")
        return {"status": data.get("status", ""), "model": data.get("model", ""),
                "workflow": data.get("workflow", ""), "api_key": prefix}


def filtered_runs(form: RunFilterForm, teams):
    runs = teams.filter(Run.objects.select_related("api_key"), "team").order_by("-created_at", "-id")
    if not form.is_valid():
        return runs
    data = form.cleaned_data
    if data["status"]:
        runs = runs.filter(status=data["status"])
    if data["model"]:
        used = Step.objects.filter(run=OuterRef("pk"), model_alias=data["model"])
        runs = runs.filter(Exists(used) | Q(target=data["model"]))
    if data["workflow"]:
        runs = runs.filter(target=f"workflow/{data['workflow']}")
    if data["api_key"]:
        runs = runs.filter(api_key_id=data["api_key"])
    if data["range"]:
        runs = runs.filter(created_at__gte=timezone.now() - RANGES[data["range"]])
    return runs


def encode_cursor(run: Run) -> str:
    return f"{run.created_at.isoformat()}|{run.id}"


class InvalidCursor(ValueError):
    """A `before=` the page did not write (edited or truncated by hand)."""


def decode_cursor(before: str) -> tuple[datetime, uuid.UUID]:
    try:
        stamp, run_id = before.split("|", 1)
        created = datetime.fromisoformat(stamp)
        created = created if created.tzinfo else timezone.make_aware(created)
        return created.astimezone(UTC), uuid.UUID(run_id)  # in UTC here: out of range is an OverflowError
    except (ValueError, OverflowError):
        raise InvalidCursor("The 'before' cursor is not one this page wrote; open the runs page again.") from None


def page_of(runs, before: str | None) -> tuple[list[Run], str | None]:
    """One page older than the cursor, and the cursor of the next page (None on the last).
    InvalidCursor when `before` cannot be read: rather a 400 than a silent first page."""
    if before:
        created, run_id = decode_cursor(before)
        runs = runs.filter(Q(created_at__lt=created) | Q(created_at=created, id__lt=run_id))
    rows = list(runs[:PAGE_SIZE + 1])
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return rows, encode_cursor(rows[-1]) if more and rows else None
