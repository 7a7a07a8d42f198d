"""Learning from what happened: per-model rolling statistics over 1 h and 24 h, recomputed periodically.

`recompute_model_stats()` rewrites the ModelStat table from recorded call steps (success rate,
latency p50/p95, mean cost, tokens) and decided review items (approval rate), per model and per
request category ("" = all categories). A call's category is its run's `metadata["category"]`;
a review's is the item's `category`.

Approval: every candidate shown in a decided review counts one review for its model; the candidate
a reviewer approved as it is counts one approval. Edits and rejections are reviews without approval;
expired items are not counted (nobody judged them). A `parallel` node's judge that picked a candidate
(and did not write its own answer) scored it s in [0, 1]: that counts s approvals of one review for
the candidate's model, as the `learned` strategy's bandit expects (engine/bandit.py).

`routing_stats()` is what routing strategies read (balanced: success and latency; learned:
approvals per category), shaped as orchestration.engine.routing documents.
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q, Sum, TextField, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce
from django.utils import timezone

from orchestration.models import ModelStat, ReviewItem, Step

WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24)}
JUDGED = (ReviewItem.Status.APPROVED, ReviewItem.Status.EDITED, ReviewItem.Status.REJECTED)
# The 1 h window describes a model's latency and success well once it holds this many calls.
MIN_RECENT_CALLS = 20


def recompute_model_stats(now: datetime | None = None) -> int:
    """Rewrite ModelStat for both windows in one transaction; the number of rows written."""
    now = now or timezone.now()
    rows = []
    for window, span in WINDOWS.items():
        since = now - span
        stats: dict[tuple[str, str], dict] = defaultdict(_empty)
        _add_calls(stats, since, now)
        _add_reviews(stats, since, now)
        _add_judgements(stats, since, now)
        rows.extend(ModelStat(model_alias=alias, window=window, category=category, computed_at=now, **values)
                    for (alias, category), values in stats.items())
    with transaction.atomic():
        ModelStat.objects.all().delete()
        ModelStat.objects.bulk_create(rows)
    _routing_cache["checked_at"] = 0.0
    return len(rows)


def _empty() -> dict:
    return {"calls": 0, "success_rate": None, "latency_p50_ms": None, "latency_p95_ms": None, "mean_cost_usd": None,
            "tokens": 0, "cost_usd": 0.0, "approvals": 0, "reviews": 0}


def _add_calls(stats: dict, since: datetime, until: datetime) -> None:
    calls = (Step.objects.filter(node_type="call", finished_at__gte=since, finished_at__lte=until)
             .exclude(status="running").exclude(model_alias=""))
    by_category = (calls.annotate(category=Coalesce(KeyTextTransform("category", "run__metadata"), Value(""),
                                                     output_field=TextField()))
                   .values("model_alias", "category")
                   .annotate(n=Count("id"), ok=Count("id", filter=Q(status="succeeded")), cost=Sum("cost_usd"),
                             tokens=Sum(F("tokens_in") + F("tokens_out"))))
    for row in by_category:
        for category in {"", row["category"] or ""}:
            entry = stats[(row["model_alias"], category)]
            entry["calls"] += row["n"]
            entry["ok"] = entry.get("ok", 0) + row["ok"]
            entry["cost_usd"] += float(row["cost"] or 0)
            entry["tokens"] += row["tokens"] or 0
    for (alias, category), entry in stats.items():
        if not entry["calls"]:
            continue
        entry["success_rate"] = entry.pop("ok", 0) / entry["calls"]
        entry["mean_cost_usd"] = entry["cost_usd"] / entry["calls"]
        if category == "":  # percentiles per model; per category the samples are too thin to matter
            latencies = calls.filter(model_alias=alias, latency_ms__isnull=False).order_by("latency_ms")
            count = latencies.count()
            if count:
                entry["latency_p50_ms"] = latencies.values_list("latency_ms", flat=True)[_rank(count, 0.50)]
                entry["latency_p95_ms"] = latencies.values_list("latency_ms", flat=True)[_rank(count, 0.95)]


def _rank(count: int, quantile: float) -> int:
    """Nearest-rank percentile, as an index into the sorted sample."""
    return max(0, min(count - 1, int(quantile * count + 0.999999) - 1))


def _add_reviews(stats: dict, since: datetime, until: datetime) -> None:
    judged = (ReviewItem.objects.filter(status__in=JUDGED, decided_at__gte=since, decided_at__lte=until)
              .values_list("status", "chosen_index", "candidates", "category"))
    for status, chosen, candidates, category in judged:
        for index, candidate in enumerate(candidates or []):
            alias = candidate.get("model") if isinstance(candidate, dict) else None
            if not alias:
                continue
            approved = status == ReviewItem.Status.APPROVED and index == chosen
            for cat in {"", category or ""}:
                entry = stats[(alias, cat)]
                entry["reviews"] += 1
                entry["approvals"] += int(approved)


def _add_judgements(stats: dict, since: datetime, until: datetime) -> None:
    judged = (Step.objects.filter(node_type="parallel", status="succeeded", finished_at__gte=since,
                                  finished_at__lte=until, attributes__has_key="judge_score")
              .annotate(category=Coalesce(KeyTextTransform("category", "run__metadata"), Value(""),
                                          output_field=TextField()))
              .values_list("attributes", "category"))
    for attributes, category in judged:
        alias, score = attributes.get("judged_model"), attributes.get("judge_score")
        if not alias or attributes.get("judge_wrote_answer") or not isinstance(score, (int, float)):
            continue  # a score for the judge's own answer says nothing of a candidate's model
        for cat in {"", category or ""}:
            entry = stats[(alias, cat)]
            entry["reviews"] += 1
            entry["approvals"] += max(0.0, min(1.0, float(score)))


# --- what routing reads ------------------------------------------------------------------------------------------

_routing_cache: dict = {"stats": {}, "checked_at": 0.0}
_routing_lock = threading.Lock()


def cached_routing_stats() -> dict[str, dict] | None:
    """`routing_stats()` while its cache is fresh, else None: a request path reads it without a thread hop and
    calls `routing_stats` (through sync_to_async) only when a refresh is due."""
    if time.monotonic() - _routing_cache["checked_at"] < settings.PODIUM_LEARNING_INTERVAL_S:
        return _routing_cache["stats"]
    return None


def routing_stats() -> dict[str, dict]:
    """alias -> {"calls", "success_rate", "latency_p50_ms", "latency_p95_ms", "mean_cost_usd", "approvals",
    "reviews", "approval_rate", "categories": {category: {"approvals", "reviews", "approval_rate"}}}.

    Call statistics come from the 1 h window when it holds MIN_RECENT_CALLS calls of the model, else from
    24 h; approvals always from 24 h (reviews are sparse). Cached for PODIUM_LEARNING_INTERVAL_S (one query
    per refresh); sync — call it through sync_to_async from async code.
    """
    cached = cached_routing_stats()
    if cached is not None:
        return cached
    with _routing_lock:
        rows = list(ModelStat.objects.all())
        by_key = {(r.model_alias, r.window, r.category): r for r in rows}
        stats: dict[str, dict] = {}
        for row in rows:
            if row.window != "24h":
                continue
            entry = stats.setdefault(row.model_alias, {"categories": {}})
            if row.category:
                entry["categories"][row.category] = {"approvals": row.approvals, "reviews": row.reviews,
                                                     "approval_rate": row.approval_rate}
                continue
            recent = by_key.get((row.model_alias, "1h", ""))
            calls = recent if recent is not None and recent.calls >= MIN_RECENT_CALLS else row
            entry.update({"calls": calls.calls, "success_rate": calls.success_rate,
                          "latency_p50_ms": calls.latency_p50_ms, "latency_p95_ms": calls.latency_p95_ms,
                          "mean_cost_usd": calls.mean_cost_usd, "approvals": row.approvals, "reviews": row.reviews,
                          "approval_rate": row.approval_rate})
        _routing_cache.update(stats=stats, checked_at=time.monotonic())
        return stats
