"""Who may watch the dashboard websocket, and closing sockets whose viewer lost that right.

Browsers come with a staff session. Programs (`podium_top --url`, `podium.client`) send
`Authorization: Bearer pdm_…` on the handshake — never a query parameter, which ends up in access
logs — and the key needs the `events` scope. Topics are read-only: a key can watch, never act.

Access is checked at the handshake, again before every subscribe/resync, and by one task per event
loop (so per server process) that re-reads every open socket's viewer in one pass every
REGISTRY_CHECK_INTERVAL. The pass reads the database directly rather than a cache stamp, so a key
revoked by a bulk update or a user changed in the shell is caught too; it costs one query per kind
of viewer per interval, and nothing while no socket is open.
"""
from __future__ import annotations

import asyncio
import logging
import weakref
from dataclasses import dataclass

from channels.db import database_sync_to_async
from django.conf import settings

from orchestration.access.apikeys import cached_key, load_key
from orchestration.access.bearer import bearer_token
from orchestration.models import APIKey

logger = logging.getLogger(__name__)

EVENTS_SCOPE = "events"
# Close codes (documented in dashboard/protocol.py).
CLOSE_CREDENTIAL_GONE = 4401  # key revoked or deleted; user deleted or deactivated
CLOSE_NOT_ALLOWED = 4403  # key without the `events` scope; user no longer staff


@dataclass(frozen=True)
class Viewer:
    kind: str  # "staff" or "key"
    id: int


async def viewer_of(scope) -> Viewer | None:
    """Who opens this socket, if they may watch: a staff session, else an API key with `events`."""
    user = scope.get("user")
    if user is not None and user.is_authenticated and user.is_staff:
        return Viewer("staff", user.pk)
    raw = bearer_token(scope)
    if not raw:
        return None
    hit, info = cached_key(raw)
    if not hit:
        info = await database_sync_to_async(load_key)(raw)
    return Viewer("key", info.id) if info is not None and info.allows(EVENTS_SCOPE) else None


def lost_access(viewers: set[Viewer]) -> dict[Viewer, int]:
    """The viewers that may no longer watch, each with the close code that says why (sync)."""
    from django.contrib.auth import get_user_model

    lost = {}
    key_ids = {viewer.id for viewer in viewers if viewer.kind == "key"}
    if key_ids:
        scopes = dict(APIKey.objects.filter(id__in=key_ids, revoked_at__isnull=True).values_list("id", "scopes"))
        for key_id in key_ids:
            if key_id not in scopes:
                lost[Viewer("key", key_id)] = CLOSE_CREDENTIAL_GONE
            elif EVENTS_SCOPE not in (scopes[key_id] or ()):
                lost[Viewer("key", key_id)] = CLOSE_NOT_ALLOWED
    user_ids = {viewer.id for viewer in viewers if viewer.kind == "staff"}
    if user_ids:
        staff = dict(get_user_model().objects.filter(pk__in=user_ids, is_active=True).values_list("pk", "is_staff"))
        for user_id in user_ids:
            if user_id not in staff:
                lost[Viewer("staff", user_id)] = CLOSE_CREDENTIAL_GONE
            elif not staff[user_id]:
                lost[Viewer("staff", user_id)] = CLOSE_NOT_ALLOWED
    return lost


class AccessWatch:
    """The open sockets of one event loop and their viewers; closes those whose viewer lost access."""

    def __init__(self, layer) -> None:
        self.layer = layer
        self.sockets: dict[str, Viewer] = {}  # channel name -> viewer
        self._task: asyncio.Task | None = None

    def watch(self, channel_name: str, viewer: Viewer) -> None:
        self.sockets[channel_name] = viewer
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="dashboard-access-watch")

    def forget(self, channel_name: str) -> None:
        self.sockets.pop(channel_name, None)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(settings.PODIUM["REGISTRY_CHECK_INTERVAL"])
            if not self.sockets:
                continue
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database blinked: keep the sockets, try again next interval
                logger.exception("dashboard: the access check of open sockets failed")

    async def check(self) -> None:
        sockets = dict(self.sockets)
        lost = await database_sync_to_async(lost_access)(set(sockets.values()))
        for channel_name, viewer in sockets.items():
            if viewer in lost:
                # Through the consumer's own channel, so the close is ordered with its other sends.
                await self.layer.send(channel_name, {"type": "access.lost", "code": lost[viewer]})
                self.sockets.pop(channel_name, None)


_watches: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AccessWatch]" = weakref.WeakKeyDictionary()


def access_watch(layer) -> AccessWatch:
    """This event loop's watch (one per server process)."""
    loop = asyncio.get_running_loop()
    watch = _watches.get(loop)
    if watch is None:
        watch = _watches[loop] = AccessWatch(layer)
    return watch
