"""Read-only selectors that build the state a dashboard topic starts from, and its row shapes.

Each builder makes a fixed number of queries whatever the data (pinned in
tests/test_dashboard_protocol.py): dashboards die of N+1. Rows built from live events
have the same shape as rows built from the database, so a page renders both alike.

`teams` narrows a snapshot to those teams' runs, steps, reviews, keys and models (None = every team and
rows with no team: superusers and operator keys); dashboard/viewers.py says who watches which teams.
"""
from __future__ import annotations

from datetime import datetime

from django.db.models import Count, Min, Q, QuerySet, Sum

from orchestration.engine.events import STEP_MARKERS
from orchestration.access.watching import callable_targets, of_teams
from orchestration.models import APIKey, LLMModel, ReviewItem, Run, Step
from orchestration.reviews.selectors import OPEN_STATUSES, Backlog, review_backlog, review_row

RECENT_CALLS = 25
RECENT_RUNS = 50
PREVIEW_CHARS = 500
TEXT_CHARS = 100_000  # run detail shows whole prompts and outputs, within reason


def epoch_ms(value: datetime | None) -> int | None:
    return int(value.timestamp() * 1000) if value else None


# --- row shapes --------------------------------------------------------------------------
def call_row(step: Step) -> dict:
    return {"step_id": str(step.id), "run_id": str(step.run_id), "model": step.model_alias, "status": step.status,
            "tokens_in": step.tokens_in, "tokens_out": step.tokens_out, "cost_usd": float(step.cost_usd),
            "latency_ms": step.latency_ms, "output": step.output[:PREVIEW_CHARS], "error": step.error[:PREVIEW_CHARS],
            "ts": epoch_ms(step.finished_at)}


def call_row_from_event(event: dict) -> dict:
    return {"step_id": event["step_id"], "run_id": event["run_id"], "model": event.get("model") or "",
            "status": event.get("status"), "tokens_in": event.get("tokens_in") or 0,
            "tokens_out": event.get("tokens_out") or 0, "cost_usd": float(event.get("cost_usd") or 0),
            "latency_ms": event.get("latency_ms"), "output": (event.get("output") or "")[:PREVIEW_CHARS],
            "error": (event.get("error") or "")[:PREVIEW_CHARS], "ts": event.get("ts")}


def run_row(run: Run) -> dict:
    return {"run_id": str(run.id), "status": run.status, "target": run.target, "kind": run.kind,
            "api_key": run.api_key.prefix if run.api_key_id else "", "created_ts": epoch_ms(run.created_at),
            "finished_ts": epoch_ms(run.finished_at), "tokens_in": run.tokens_in, "tokens_out": run.tokens_out,
            "cost_usd": float(run.cost_usd), "latency_ms": run.latency_ms, "error": run.error[:PREVIEW_CHARS]}


def run_row_from_event(event: dict, previous: dict | None = None) -> dict:
    row = dict(previous or {"run_id": event["run_id"], "created_ts": event.get("ts"), "finished_ts": None,
                            "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0, "latency_ms": None, "error": "",
                            "api_key": "", "kind": "", "target": ""})
    row["status"] = event.get("status") or row.get("status")
    for name in ("target", "kind", "api_key", "tokens_in", "tokens_out", "latency_ms"):
        if event.get(name) not in (None, ""):
            row[name] = event[name]
    if event.get("cost_usd") is not None:
        row["cost_usd"] = float(event["cost_usd"])
    if event.get("error"):
        row["error"] = str(event["error"])[:PREVIEW_CHARS]
    if event.get("status") not in (None, "queued", "running", "awaiting_review"):
        row["finished_ts"] = event.get("ts")
    return row


def markers(attributes: dict) -> dict:
    return {name: attributes[name] for name in STEP_MARKERS if attributes.get(name) not in (None, False, "", 0)}


def step_row(step: Step) -> dict:
    return {"step_id": str(step.id), "parent_id": str(step.parent_id) if step.parent_id else None, "key": step.key,
            "node_id": step.node_id, "node_type": step.node_type, "model": step.model_alias,
            "provider": step.provider, "status": step.status, "prompt": step.prompt,
            "output": step.output[:TEXT_CHARS], "error": step.error[:TEXT_CHARS], "confidence": step.confidence,
            "confidence_method": step.confidence_method, "tokens_in": step.tokens_in, "tokens_out": step.tokens_out, "cost_usd": float(step.cost_usd),
            "latency_ms": step.latency_ms, "started_ts": epoch_ms(step.started_at),
            "finished_ts": epoch_ms(step.finished_at), "markers": markers(step.attributes or {})}


def step_row_from_event(event: dict, previous: dict | None = None) -> dict:
    row = dict(previous or {})
    attributes = dict(event.get("attributes") or {})
    for name in STEP_MARKERS:
        if event.get(name) not in (None, False, ""):
            attributes.setdefault(name, event[name])
    finished = event["type"] == "step.finished"
    row.update({
        "step_id": event["step_id"], "parent_id": event.get("parent_id"), "key": event.get("key", ""),
        "node_id": event.get("node_id", ""), "node_type": event.get("node_type", "call"),
        "model": event.get("model") or "", "provider": event.get("provider") or "",
        "status": event.get("status") if finished else row.get("status", "running"),
        "started_ts": event.get("started_ts") or row.get("started_ts") or event.get("ts"),
        "finished_ts": event.get("ts") if finished else None,
        "markers": {**row.get("markers", {}), **markers(attributes)},
    })
    if event.get("prompt") is not None:
        row["prompt"] = event["prompt"]
    row.setdefault("prompt", [])
    for name in ("output", "error"):
        row[name] = str(event.get(name) or row.get(name) or "")[:TEXT_CHARS]
    for name in ("confidence", "confidence_method", "tokens_in", "tokens_out", "latency_ms"):
        row[name] = event.get(name, row.get(name))
    row["cost_usd"] = float(event.get("cost_usd") or row.get("cost_usd") or 0)
    return row


def key_row(key: APIKey) -> dict:
    return {"name": key.name, "prefix": key.prefix, "budget_usd": float(key.budget_usd) if key.budget_usd else None,
            "spent_usd": float(key.spent_usd)}


def model_row(model: LLMModel) -> dict:
    return {"alias": model.alias, "tier": model.tier, "provider": model.provider.name,
            "enabled": model.enabled and model.provider.enabled, "admin_id": model.pk}


# --- scoping by team ------------------------------------------------------------------------
def backlog(teams=None) -> Backlog:
    """The review backlog of `teams`' runs (review_backlog's, scoped): one query."""
    if teams is None:
        return review_backlog()
    row = of_teams(ReviewItem.objects, "run__team_id", teams).aggregate(
        pending=Count("id", filter=Q(status=ReviewItem.Status.PENDING)),
        claimed=Count("id", filter=Q(status=ReviewItem.Status.CLAIMED)),
        oldest_pending=Min("created_at", filter=Q(status=ReviewItem.Status.PENDING)),
        oldest_open=Min("created_at", filter=Q(status__in=OPEN_STATUSES)))
    return Backlog(pending=row["pending"], claimed=row["claimed"], oldest_pending_at=row["oldest_pending"],
                   oldest_open_at=row["oldest_open"])


# --- topic snapshots ------------------------------------------------------------------------
def model_list(teams=None) -> list[dict]:
    """Every configured model (one query), or those `teams` may call."""
    models = LLMModel.objects.select_related("provider").order_by("alias")
    targets = callable_targets(teams)
    if targets is not None:
        models = models.filter(alias__in=targets)
    return [model_row(m) for m in models]


def active_keys(teams=None) -> list[dict]:
    """Every API key not revoked (of `teams`), with its spending: one query."""
    return [key_row(k) for k in of_teams(APIKey.objects.filter(revoked_at__isnull=True), "team_id", teams)
            .order_by("name")]


def overview_snapshot(teams=None) -> dict:
    """What the overview starts from: five queries whatever the traffic (three more for a team scope's models)."""
    steps = of_teams(Step.objects.filter(node_type="call"), "run__team_id", teams)
    calls = steps.filter(finished_at__isnull=False).order_by("-finished_at")[:RECENT_CALLS]
    totals = {
        row["model_alias"]: {"calls": row["calls"], "failures": row["failures"],
                             "tokens": (row["tin"] or 0) + (row["tout"] or 0), "cost_usd": float(row["cost"] or 0)}
        for row in steps.exclude(status="running").values("model_alias")
        .annotate(calls=Count("id"), failures=Count("id", filter=Q(status="failed")), tin=Sum("tokens_in"),
                  tout=Sum("tokens_out"), cost=Sum("cost_usd"))
    }
    return {"recent": [call_row(s) for s in calls], "totals": totals, "keys": active_keys(teams),
            "backlog": backlog(teams).live(), "models": model_list(teams)}


def runs_snapshot(limit: int = RECENT_RUNS, teams=None) -> dict:
    """The newest runs (of `teams`): one query."""
    runs = of_teams(Run.objects.select_related("api_key"), "team_id", teams).order_by("-created_at")[:limit]
    return {"runs": [run_row(r) for r in runs]}


def run_team(run_id: str) -> tuple[bool, int | None]:
    """(recorded, team id) of a run: one query."""
    row = Run.objects.filter(pk=run_id).values_list("team_id", flat=True)[:1]
    found = list(row)
    return (True, found[0]) if found else (False, None)


def run_snapshot(run_id: str) -> dict:
    """One run and its step tree: two queries. A run not recorded yet gives run None."""
    run = Run.objects.select_related("api_key").filter(pk=run_id).first()
    steps = [step_row(s) for s in Step.objects.filter(run_id=run_id).order_by("started_at", "key")]
    return {"run": run_row(run) if run else None, "steps": steps}


def team_review_row(item: ReviewItem) -> dict:
    """A review row with its run's team (the queue offers decisions only on the teams one reviews for)."""
    return {**review_row(item), "team": item.run.team_id}


def open_reviews(limit: int = 200, teams=None) -> list[dict]:
    items = (of_teams(ReviewItem.objects.filter(status__in=OPEN_STATUSES), "run__team_id", teams)
             .select_related("assignee", "run").order_by("created_at")[:limit])
    return [team_review_row(item) for item in items]


def reviews_snapshot(teams=None) -> dict:
    """Pending and claimed review items (of `teams`) with their counts: two queries."""
    return {"items": open_reviews(teams=teams), "counts": backlog(teams).live()}


def review_state(review_id: str) -> dict | None:
    """One review item as the reviews topic shows it, or None once it is no longer open: one query."""
    return review_states([review_id])[str(review_id)][0]


def review_states(review_ids) -> dict[str, tuple[dict | None, int | None]]:
    """Review id -> (its row as the reviews topic shows it or None once no longer open, its run's team): one query."""
    items = {str(item.pk): item for item in ReviewItem.objects.select_related("assignee", "run")
             .filter(pk__in=list(review_ids))}
    states = {}
    for review_id in review_ids:
        item = items.get(str(review_id))
        states[str(review_id)] = ((team_review_row(item) if item.status in OPEN_STATUSES else None, item.run.team_id)
                                  if item else (None, None))
    return states
