"""The live `run.updated` event of a workflow run, read from its committed row."""
from __future__ import annotations

from django.db import transaction

from orchestration import live
from orchestration.engine.events import RunUpdated, run_updated
from orchestration.models import Run


def run_event(run: Run) -> RunUpdated:
    return run_updated(run_id=str(run.pk), status=run.status, target=run.target, kind=run.kind,
                       api_key=run.api_key.prefix if run.api_key_id else "", team=run.team_id, cost_usd=float(run.cost_usd),
                       tokens_in=run.tokens_in, tokens_out=run.tokens_out, latency_ms=run.latency_ms,
                       confidence=run.confidence)


def publish_run_on_commit(run_id) -> None:
    def send():
        run = Run.objects.select_related("api_key").filter(pk=run_id).first()
        if run is not None:
            live.publish(run_event(run))
    transaction.on_commit(send)
