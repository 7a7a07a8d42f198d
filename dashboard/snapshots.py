"""Read-only selectors that build the state a dashboard starts from."""
from django.db.models import Avg, Count, Sum

from orchestration.models import Step

RECENT_CALLS = 25


def step_row(step: Step) -> dict:
    return {"step_id": str(step.id), "run_id": str(step.run_id), "model": step.model_alias, "status": step.status,
            "tokens_in": step.tokens_in, "tokens_out": step.tokens_out, "cost_usd": float(step.cost_usd),
            "latency_ms": step.latency_ms, "output": step.output[:500], "error": step.error[:500],
            "ts": int(step.finished_at.timestamp() * 1000) if step.finished_at else None}


def overview_snapshot() -> dict:
    """Latest calls and per-model counters: two queries whatever the traffic."""
    recent = [step_row(s) for s in Step.objects.filter(node_type="call").order_by("-finished_at")[:RECENT_CALLS]]
    counters = {
        row["model_alias"]: {"calls": row["calls"], "tokens": (row["tin"] or 0) + (row["tout"] or 0),
                             "cost_usd": float(row["cost"] or 0), "latency_sum_ms": float(row["lat_avg"] or 0) * row["calls"]}
        for row in Step.objects.filter(node_type="call").values("model_alias")
        .annotate(calls=Count("id"), tin=Sum("tokens_in"), tout=Sum("tokens_out"), cost=Sum("cost_usd"),
                  lat_avg=Avg("latency_ms"))
    }
    return {"recent": recent, "models": counters}
