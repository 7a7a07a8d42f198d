"""Per-model statistics over an hour or a day for the models page: three queries per window."""
from __future__ import annotations

from datetime import timedelta

from django.db.models import Count, Q, Sum
from django.utils import timezone

from orchestration.models import ReviewItem, Step

WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24)}
LATENCY_SAMPLE = 20_000  # percentiles come from the newest calls of the window, enough for a page


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return round(sorted_values[index], 1)


def model_stats(window: str, teams=None) -> dict[str, dict]:
    """alias -> calls, success_rate, latency_p50_ms, latency_p95_ms, tokens, cost_usd, approval_rate; of the runs
    of `teams` (team ids) only, or of every run when teams is None."""
    since = timezone.now() - WINDOWS[window]
    calls = Step.objects.filter(node_type="call", finished_at__gte=since)
    if teams is not None:
        calls = calls.filter(run__team_id__in=list(teams))
    stats: dict[str, dict] = {}
    for row in calls.values("model_alias").annotate(
            n=Count("id"), ok=Count("id", filter=Q(status="succeeded")), tin=Sum("tokens_in"),
            tout=Sum("tokens_out"), cost=Sum("cost_usd")):
        stats[row["model_alias"]] = {
            "calls": row["n"], "success_rate": row["ok"] / row["n"] if row["n"] else None,
            "tokens": (row["tin"] or 0) + (row["tout"] or 0), "cost_usd": float(row["cost"] or 0),
            "latency_p50_ms": None, "latency_p95_ms": None, "approval_rate": None, "reviews": 0}
    latencies: dict[str, list[float]] = {}
    sample = calls.filter(latency_ms__isnull=False).order_by("-finished_at").values_list("model_alias", "latency_ms")
    for alias, latency in sample[:LATENCY_SAMPLE]:
        latencies.setdefault(alias, []).append(latency)
    for alias, values in latencies.items():
        values.sort()
        if alias in stats:
            stats[alias]["latency_p50_ms"] = percentile(values, 0.5)
            stats[alias]["latency_p95_ms"] = percentile(values, 0.95)
    decided = ReviewItem.objects.filter(decided_at__gte=since, step__isnull=False)
    if teams is not None:
        decided = decided.filter(run__team_id__in=list(teams))
    decided = (decided.values("step__model_alias")
               .annotate(n=Count("id"), approved=Count("id", filter=Q(status=ReviewItem.Status.APPROVED))))
    for row in decided:
        entry = stats.get(row["step__model_alias"])
        if entry is not None and row["n"]:
            entry["reviews"] = row["n"]
            entry["approval_rate"] = row["approved"] / row["n"]
    return stats
