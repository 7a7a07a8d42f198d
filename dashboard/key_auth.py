"""API-key access to the dashboard websocket, for programs (`podium_top --url`, `podium.client`).

Browsers come with a staff session. Programs send `Authorization: Bearer pdm_…` on the
handshake — never a query parameter, which ends up in access logs — and the key needs the
`events` scope. Topics are read-only, so a key can watch but never act through the socket.
"""
from channels.db import database_sync_to_async

from api.v1.app import bearer_token
from orchestration.apikeys import cached_key, load_key

EVENTS_SCOPE = "events"


async def key_may_watch(scope) -> bool:
    """True when the handshake carries an active API key with the `events` scope."""
    raw = bearer_token(scope)
    if not raw:
        return False
    hit, info = cached_key(raw)
    if not hit:
        info = await database_sync_to_async(load_key)(raw)
    return info is not None and info.allows(EVENTS_SCOPE)
