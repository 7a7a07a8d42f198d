"""Liveness and readiness probes for load balancers and orchestrators."""
from django.http import JsonResponse

from observability.health import infrastructure_checks, writer_check


def healthz(request):
    return JsonResponse({"status": "ok"})


def readyz(request):
    """503 while a dependency is unreachable ("unavailable") or this process cannot record ("degraded")."""
    checks = infrastructure_checks()
    infrastructure_ok = all(value == "ok" for value in checks.values())
    checks["writer"], writer = writer_check()
    status = "unavailable" if not infrastructure_ok else "ok" if checks["writer"] == "ok" else "degraded"
    return JsonResponse({"status": status, "checks": checks, "writer": writer}, status=200 if status == "ok" else 503)
