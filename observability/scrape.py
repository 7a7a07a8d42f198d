"""/metrics in the Prometheus text format, for a bearer token or an allowed network only.

With PODIUM_PRODUCTION set the token is required: a reverse proxy on the same host would otherwise make
every request look local. The allow-list is checked against the client behind trusted proxies.
"""
import hmac

from django.conf import settings
from django.core import checks
from django.http import HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from observability.prometheus import exposition
from orchestration.access.client_address import client_ip

TOKEN_MISSING = ("Forbidden: PODIUM_PRODUCTION is set and PODIUM_METRICS_TOKEN is not; set it and scrape with "
                 "'Authorization: Bearer <PODIUM_METRICS_TOKEN>'.\n")
FORBIDDEN = ("Forbidden: send 'Authorization: Bearer <PODIUM_METRICS_TOKEN>' "
             "or scrape from an allowed network.\n")
FORBIDDEN_PRODUCTION = "Forbidden: send 'Authorization: Bearer <PODIUM_METRICS_TOKEN>'.\n"


def bearer_matches(request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    return bool(token) and header[:7].lower() == "bearer " and hmac.compare_digest(
        header[7:].strip().encode(), token.encode())


def allowed(request) -> bool:
    if bearer_matches(request, settings.PODIUM["METRICS_TOKEN"]):
        return True
    if settings.PRODUCTION:
        return False
    address = client_ip(request.META)
    return address is not None and any(address in network
                                       for network in settings.PODIUM["METRICS_ALLOWED_NETWORKS"])


@require_GET
def metrics(request):
    if not allowed(request):
        if settings.PRODUCTION and not settings.PODIUM["METRICS_TOKEN"]:
            message = TOKEN_MISSING
        else:
            message = FORBIDDEN_PRODUCTION if settings.PRODUCTION else FORBIDDEN
        return HttpResponse(message, status=403, content_type="text/plain")
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)


@checks.register(checks.Tags.security)
def metrics_token_check(app_configs=None, **kwargs):
    if settings.PRODUCTION and not settings.PODIUM["METRICS_TOKEN"]:
        return [checks.Warning("PODIUM_PRODUCTION is set without PODIUM_METRICS_TOKEN: /metrics refuses every "
                               "scrape until it is set.", hint="Set PODIUM_METRICS_TOKEN and give it to the "
                               "scraper as a bearer token.", id="podium.W001")]
    return []
