"""A run with its steps as plain JSON values: what `/api/runs/<id>/` answers and `podium_run --json` prints."""
from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from orchestration.models import Run

RUN_FIELDS = ("id", "kind", "target", "status", "output", "confidence", "tokens_in", "tokens_out", "cost_usd",
              "latency_ms", "error", "metadata", "created_at", "started_at", "finished_at", "input")
STEP_FIELDS = ("id", "parent_id", "key", "node_id", "node_type", "model_alias", "provider", "status", "prompt",
               "output", "confidence", "confidence_method", "confidence_raw", "tokens_in", "tokens_out",
               "tokens_estimated", "cost_usd", "latency_ms", "error", "attributes", "started_at", "finished_at")


def step_tree(steps) -> list[dict]:
    """Steps nested under their parents (each with its id, key, type, model, status and children)."""
    steps = list(steps)
    nodes = {step.id: {"id": str(step.id), "key": step.key, "node_type": step.node_type,
                       "model": step.model_alias, "status": step.status, "children": []}
             for step in steps}
    roots = []
    for step in steps:
        parent = nodes.get(step.parent_id)
        (parent["children"] if parent else roots).append(nodes[step.id])
    return roots


def _json_value(value):
    """The value as the REST API writes it (DRF: ISO datetimes in UTC with Z, decimals and UUIDs as text)."""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, (Decimal, uuid.UUID)):
        return str(value)
    return value


def run_tree(run_id: str) -> dict:
    """The run, its steps (flat and as a tree) and its workflow, with the fields `/api/runs/<id>/` has."""
    run = Run.objects.select_related("workflow_version__workflow", "team").prefetch_related("steps").get(pk=run_id)
    steps = list(run.steps.all())
    version = run.workflow_version
    data = {name: _json_value(getattr(run, name)) for name in RUN_FIELDS}
    data["steps"] = [{("parent" if name == "parent_id" else name): _json_value(getattr(step, name))
                      for name in STEP_FIELDS} for step in steps]
    data.update(team=run.team.slug if run.team_id else None, workflow=version.workflow.slug if version else None, workflow_version=version.number if version else None,
                budget_usd=_json_value(run.budget_usd), deadline_at=_json_value(run.deadline_at),
                step_tree=step_tree(steps))
    return data
