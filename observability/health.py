"""Readiness of what Podium depends on: the database and, when configured, Redis."""
from django.conf import settings
from django.db import connection
from orchestration.gateway.writer import DEGRADED_AFTER_FAILED_FLUSHES, writer
from orchestration.models import WriterDeadLetter


def infrastructure_checks() -> dict[str, str]:
    """{"database": "ok" | "error: …", "redis": …} — never raises, never shows a connection string."""
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    if settings.REDIS_URL:
        try:
            import redis

            redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1).ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
    return checks


def writer_check() -> tuple[str, dict]:
    """This process's batched writer: "ok", or "degraded: …" when runs pile up beyond PODIUM_WRITER_BACKLOG_LIMIT
    or its flushes keep failing (a process that cannot record should get no traffic); with the figures."""
    pending, limit = writer.pending(), settings.PODIUM["WRITER_BACKLOG_LIMIT"]
    failures, failing_for = writer.failures_in_a_row, writer.failing_for_s()
    try:
        dead_letters = WriterDeadLetter.objects.count()
    except Exception:
        dead_letters = None  # the database check says why
    details = {"pending_runs": pending, "backlog_limit": limit, "failed_flushes_in_a_row": failures,
               "failing_for_s": round(failing_for, 1), "dead_letters": dead_letters}
    if pending > limit:
        return f"degraded: {pending} runs waiting to be recorded (limit {limit})", details
    if failures >= DEGRADED_AFTER_FAILED_FLUSHES:
        return f"degraded: recording has failed for {failing_for:.0f}s ({failures} flushes in a row)", details
    return "ok", details
