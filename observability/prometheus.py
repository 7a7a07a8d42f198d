"""Prometheus metrics: counters fed by live events, gauges read at scrape time.

Every event goes through `orchestration.live.publish`, in whichever process produced it (a web
process for /v1 calls, a Celery worker for async runs); `observe_event` is registered there as an
observer, so the counters see every call even when Redis is down.

Several processes: set PROMETHEUS_MULTIPROC_DIR (an empty directory, wiped at deploy) for every
process of a host, and /metrics on any of them aggregates the counters of all of them
(prometheus_client's multiprocess mode; `make up` does this). Without it each process reports its own.
Scrape-time gauges (queue depth, review backlog, runs in progress) come from Redis and the
database, so they are the same whichever process answers.
"""
from __future__ import annotations

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily

from orchestration import live
from orchestration.gateway.writer import writer
from orchestration.instruments import WRITER_PENDING
from orchestration.models import Run, WriterDeadLetter
from orchestration.models.runs import FINAL_RUN_STATUSES
from orchestration.reviews.selectors import review_backlog
from orchestration.runner.presence import live_workers
from orchestration.runs.recovery import running_without_lease

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
CIRCUIT_VALUES = {"closed": 0, "half_open": 1, "open": 2}

MODEL_REQUESTS = Counter("podium_model_requests", "Model calls, by model, provider and outcome",
                         ["model", "provider", "status"])
MODEL_TOKENS = Counter("podium_model_tokens", "Tokens of model calls, by direction (input, output)",
                       ["model", "provider", "direction"])
MODEL_COST = Counter("podium_model_cost_usd", "Cost of model calls in USD", ["model", "provider"])
MODEL_LATENCY = Histogram("podium_model_latency_seconds", "Latency of model calls", ["model", "provider"],
                          buckets=LATENCY_BUCKETS_S)
RUNS_FINISHED = Counter("podium_runs_finished", "Runs that reached a final state", ["kind", "status"])
CIRCUIT_STATE = Gauge("podium_circuit_state", "Circuit breaker state per model: 0 closed, 1 half-open, 2 open "
                      "(worst over live processes)", ["model"], multiprocess_mode="livemax")

MODEL_CALL_NODES = ("call", "embeddings")  # composite nodes (sequence, parallel, ...) name a model but call none


class _ModelSeries:
    """The labelled children of one (model, provider): `labels()` validates and locks on every call, and
    the /v1 hot path counts every call, so each pair's children are looked up once."""

    def __init__(self, model: str, provider: str) -> None:
        self.model, self.provider = model, provider
        self.tokens_in = MODEL_TOKENS.labels(model, provider, "input")
        self.tokens_out = MODEL_TOKENS.labels(model, provider, "output")
        self.cost = MODEL_COST.labels(model, provider)
        self.latency = MODEL_LATENCY.labels(model, provider)
        self.requests: dict[str, object] = {}

    def requests_with(self, status: str):
        child = self.requests.get(status)
        if child is None:
            child = self.requests[status] = MODEL_REQUESTS.labels(self.model, self.provider, status)
        return child


_series: dict[tuple[str, str], _ModelSeries] = {}
_runs_finished: dict[tuple[str, str], object] = {}


def observe_event(event: dict) -> None:
    """Count one live event (registered as an `orchestration.live` observer)."""
    kind = event.get("type")
    if kind == "step.finished" and event.get("model") and event.get("node_type", "call") in MODEL_CALL_NODES:
        key = (event["model"], event.get("provider") or "")
        series = _series.get(key)
        if series is None:
            series = _series[key] = _ModelSeries(*key)
        series.requests_with(event.get("status") or "unknown").inc()
        series.tokens_in.inc(int(event.get("tokens_in") or 0))
        series.tokens_out.inc(int(event.get("tokens_out") or 0))
        series.cost.inc(max(0.0, float(event.get("cost_usd") or 0.0)))
        if event.get("latency_ms") is not None:
            series.latency.observe(float(event["latency_ms"]) / 1000)
    elif kind == "run.updated" and event.get("status") in FINAL_RUN_STATUSES:
        key = (event.get("kind") or "unknown", event["status"])
        counter = _runs_finished.get(key)
        if counter is None:
            counter = _runs_finished[key] = RUNS_FINISHED.labels(*key)
        counter.inc()
    elif kind == "model.health" and event.get("model") and event.get("state") in CIRCUIT_VALUES:
        CIRCUIT_STATE.labels(event["model"]).set(CIRCUIT_VALUES[event["state"]])


class ScrapeTimeCollector:
    """Gauges read when /metrics is scraped: queue depth, review backlog, runs in progress, dead letters."""

    def describe(self):
        return []  # registering must not query the database

    def collect(self):
        yield from self._database_gauges()
        depth = queue_depth()
        if depth is not None:
            family = GaugeMetricFamily("podium_queue_depth", "Tasks waiting in the Celery queue", labels=["queue"])
            family.add_metric(["celery"], depth[0])
            yield family
            # Delivered to a worker, not yet acknowledged: running, or held by a worker that died (they come back
            # after the visibility timeout; their runs sooner, by lease expiry and beat's sweep).
            family = GaugeMetricFamily("podium_tasks_unacked", "Tasks delivered to a worker and not acknowledged")
            family.add_metric([], depth[1])
            yield family
        try:
            workers = live_workers()
        except Exception:  # Redis away: missing rather than wrong
            workers = None
        if workers is not None:
            family = GaugeMetricFamily("podium_workers_alive", "Celery workers whose presence key is alive")
            family.add_metric([], workers)
            yield family
        family = GaugeMetricFamily("podium_live_events_dropped_process", "Live events dropped by the process "
                                   "that answered, since it started")
        family.add_metric([], live.stats["dropped"])
        yield family

    def _database_gauges(self):
        from django.db.models import Count, Min
        from django.utils import timezone

        backlog = GaugeMetricFamily("podium_review_backlog", "Review items waiting for a decision",
                                    labels=["status"])
        counts = review_backlog()
        backlog.add_metric(["pending"], counts.pending)
        backlog.add_metric(["claimed"], counts.claimed)
        yield backlog
        runs = GaugeMetricFamily("podium_runs_in_progress", "Runs not yet final", labels=["status"])
        counts = dict(Run.objects.filter(status__in=["queued", "running", "awaiting_review"]).values_list("status")
                      .annotate(n=Count("id")).values_list("status", "n"))
        for status in ("queued", "running", "awaiting_review"):
            runs.add_metric([status], counts.get(status, 0))
        yield runs
        oldest = Run.objects.filter(status="running").aggregate(started=Min("started_at"))["started"]
        age = GaugeMetricFamily("podium_oldest_running_run_age_seconds", "How long the longest-running run has "
                                "been running (0 when none is)")
        age.add_metric([], (timezone.now() - oldest).total_seconds() if oldest else 0.0)
        yield age
        try:
            orphaned = running_without_lease()
        except Exception:  # Redis away: the gauge is missing rather than wrong
            orphaned = None
        if orphaned is not None:
            family = GaugeMetricFamily("podium_runs_lease_expired", "Running runs whose lease expired (their "
                                       "worker died), not yet handed out again")
            family.add_metric([], orphaned)
            yield family
        dead_letters = GaugeMetricFamily("podium_writer_dead_letters_stored", "Rows in the writer's dead-letter "
                                         "table (admin: Writer dead letters)")
        dead_letters.add_metric([], WriterDeadLetter.objects.count())
        yield dead_letters


_scrape_time = ScrapeTimeCollector()
REGISTRY.register(_scrape_time)


def queue_depth() -> tuple[int, int] | None:
    """(messages waiting in Celery's default queue, messages delivered and not acknowledged) on the Redis
    broker, or None without Redis. Kombu's Redis transport keeps the unacknowledged ones in the `unacked`
    hash."""
    from django.conf import settings

    if not getattr(settings, "REDIS_URL", ""):
        return None
    try:
        import redis

        client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return int(client.llen("celery")), int(client.hlen("unacked"))
        finally:
            client.close()
    except Exception:
        return None


def exposition() -> bytes:
    """The text format of every metric of this host (all processes in multiprocess mode)."""
    WRITER_PENDING.set(writer.pending())  # the answering process's own backlog as of now
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(_scrape_time)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def mark_process_dead(pid: int) -> None:
    """Drop a finished process's live gauges (multiprocess mode); counters are kept."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
