"""/metrics in the Prometheus text format, for a bearer token or an allowed network only."""
import hmac
import ipaddress

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from orchestration.prometheus import exposition


def allowed(request) -> bool:
    token = settings.PODIUM["METRICS_TOKEN"]
    header = request.headers.get("Authorization", "")
    if token and header[:7].lower() == "bearer " and hmac.compare_digest(header[7:].strip().encode(), token.encode()):
        return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in network for network in settings.PODIUM["METRICS_ALLOWED_NETWORKS"])


@require_GET
def metrics(request):
    if not allowed(request):
        return HttpResponse("Forbidden: send 'Authorization: Bearer <PODIUM_METRICS_TOKEN>' "
                            "or scrape from an allowed network.\n", status=403, content_type="text/plain")
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
