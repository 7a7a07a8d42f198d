"""The API key an ASGI request or websocket handshake carries as `Authorization: Bearer <key>`."""
from __future__ import annotations


def request_header(scope, name: bytes) -> str | None:
    """An ASGI request's header (the first of that name, decoded as latin-1 as HTTP carries it), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def bearer_token(scope) -> str:
    """The key from the scope's Authorization header, or "" when there is none (or it is not a bearer)."""
    text = request_header(scope, b"authorization") or ""
    return text[7:].strip() if text[:7].lower() == "bearer " else ""
