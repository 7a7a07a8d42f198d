"""Which Host headers this server answers: Django's ALLOWED_HOSTS rule, for the ASGI paths Django never sees.

/v1 and the dashboard websocket bypass Django's request handling, which is where ALLOWED_HOSTS is
normally enforced (it defeats DNS rebinding). The verdict is cached per raw header value, so the
/v1 hot path pays a dict lookup; the cache is bounded because clients choose the values.
"""
from __future__ import annotations

from django.conf import settings
from django.core.signals import setting_changed
from django.http.request import split_domain_port, validate_host

_verdicts: dict[bytes, bool] = {}
_MAX_REMEMBERED = 1024


def host_header(scope) -> bytes:
    """The Host header, or the server's own address when a (HTTP/1.0) client sent none, as Django does."""
    for name, value in scope["headers"]:
        if name == b"host":
            return value
    server = scope.get("server")
    return f"{server[0]}:{server[1]}".encode() if server and server[1] is not None else b""


def host_is_allowed(host: bytes) -> bool:
    verdict = _verdicts.get(host)
    if verdict is None:
        verdict = _judge(host)
        if len(_verdicts) >= _MAX_REMEMBERED:
            _verdicts.clear()
        _verdicts[host] = verdict
    return verdict


def _judge(host: bytes) -> bool:
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:  # Django's own default for a development server
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    domain, _ = split_domain_port(host.decode("latin-1"))
    return bool(domain) and validate_host(domain, allowed)


def _forget_verdicts(setting: str, **kwargs) -> None:
    if setting in ("ALLOWED_HOSTS", "DEBUG"):
        _verdicts.clear()


setting_changed.connect(_forget_verdicts)
