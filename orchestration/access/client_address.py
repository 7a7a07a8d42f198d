"""The address of the client behind a request, believing X-Forwarded-For only from our own proxies.

Anyone can send X-Forwarded-For, so the header counts only when the direct peer is a network listed in
PODIUM_TRUSTED_PROXIES. Each proxy appends the address it saw, so the header is read right to left and
the first hop that is not a trusted proxy is the client; entries left of it were written by the client
and are ignored. With no trusted proxies (the default) the direct peer is the client.
"""
from __future__ import annotations

import ipaddress

from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse(text: str) -> IPAddress | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port, as some proxies write it
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: IPAddress) -> bool:
    return any(address in network for network in settings.PODIUM["TRUSTED_PROXIES"])


def client_ip(meta: dict) -> IPAddress | None:
    """The client's address from a request's META (or a scope-derived dict), None when unknown."""
    peer = _parse(meta.get("REMOTE_ADDR") or "")
    if peer is None or not _trusted(peer):
        return peer
    client = peer
    for hop in reversed((meta.get("HTTP_X_FORWARDED_FOR") or "").split(",")):
        address = _parse(hop)
        if address is None:  # garbage where a trusted proxy should have written an address: stop here
            break
        client = address
        if not _trusted(address):
            break
    return client


def client_address(request) -> str | None:
    address = client_ip(request.META) if request is not None else None
    return str(address) if address is not None else None
