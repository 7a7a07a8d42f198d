"""The API key an ASGI request or websocket handshake carries as `Authorization: Bearer <key>`."""
from __future__ import annotations


def bearer_token(scope) -> str:
    """The key from the scope's Authorization header, or "" when there is none (or it is not a bearer)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            text = value.decode("latin-1")
            return text[7:].strip() if text[:7].lower() == "bearer " else ""
    return ""
