"""The websocket handshake guard: an allowed Host, and an Origin that is the page's own or a trusted one.

A browser always sends Origin on a websocket handshake, and carries the staff session cookie even when
a foreign page opens the socket; so an Origin must match scheme, host and port exactly (ws -> http,
wss -> https; behind a TLS proxy only through SECURE_PROXY_SSL_HEADER) or be listed in
CSRF_TRUSTED_ORIGINS (Django's syntax, `https://*.example.com` included).

A handshake without Origin is a program (podium_top, podium.client): it must authenticate with an
API key, so its cookies are dropped before the session is read.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import is_same_domain

from orchestration.access.hosts import host_header, host_is_allowed

DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_parts(text: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) with the default port filled in, or None when it is not an http(s) origin."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme]


def handshake_scheme(scope) -> str:
    """http or https: what the browser's page used to reach us."""
    if settings.SECURE_PROXY_SSL_HEADER:
        header, secure_value = settings.SECURE_PROXY_SSL_HEADER
        wanted = header.removeprefix("HTTP_").lower().replace("_", "-").encode()
        for name, value in scope["headers"]:
            if name == wanted:
                return "https" if value.decode("latin-1").split(",", 1)[0].strip() == secure_value else "http"
    return "https" if scope.get("scheme") == "wss" else "http"


def origin_is_allowed(origin: str, scope) -> bool:
    parts = _origin_parts(origin)
    if parts is None:  # "null" (sandboxed frames, file://) and anything unparseable
        return False
    scheme = handshake_scheme(scope)
    own = _origin_parts(f"{scheme}://{host_header(scope).decode('latin-1')}")
    if parts == own:
        return True
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        if "*" in trusted:  # https://*.example.com: the domain and its subdomains, scheme as given
            trusted_scheme, _, netloc = trusted.partition("://")
            if parts[0] == trusted_scheme and is_same_domain(urlsplit(origin).netloc.lower(), netloc.lstrip("*")):
                return True
        elif parts == _origin_parts(trusted):
            return True
    return False


class OriginGuard:
    """ASGI middleware for websocket handshakes; put it outside the session/auth middleware."""

    def __init__(self, application) -> None:
        self.application = application

    async def __call__(self, scope, receive, send):
        if not host_is_allowed(host_header(scope)):
            return await WebsocketDenier()(scope, receive, send)
        origin = next((value for name, value in scope["headers"] if name == b"origin"), None)
        if origin is None:
            scope = {**scope, "headers": [(name, value) for name, value in scope["headers"] if name != b"cookie"]}
        elif not origin_is_allowed(origin.decode("latin-1"), scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
