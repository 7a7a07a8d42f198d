"""Liveness and readiness probes for load balancers and orchestrators."""
from django.http import JsonResponse

from orchestration.health import infrastructure_checks


def healthz(request):
    return JsonResponse({"status": "ok"})


def readyz(request):
    checks = infrastructure_checks()
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)
