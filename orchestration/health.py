"""Readiness of what Podium depends on: the database and, when configured, Redis."""
from django.conf import settings
from django.db import connection


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
