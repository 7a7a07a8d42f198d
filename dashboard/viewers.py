"""Who may watch the dashboard websocket, which teams they see, and closing sockets whose viewer lost that right.

Browsers come with a session: a superuser watches every team, anyone else the teams they are a member
of (a logged-in user in no team may not watch). Programs (`podium_top --url`, `podium.client`) send
`Authorization: Bearer pdm_…` on the handshake — never a query parameter, which ends up in access
logs. A key with scope `events` watches its own team; a key with no team (an operator's key) and `events`
watches every team, as before teams existed; `events:all` watches every team whatever the key's team.
`?team=<slug>` on the handshake narrows an all-teams viewer to one team, or a member to one of theirs; a
team the viewer may not watch (or no such team) refuses the handshake alike, so it hints at nothing.
Topics are read-only: a key can watch, never act.

Access is checked at the handshake, again before every subscribe/resync, and by one task per event
loop (so per server process) that re-reads every open socket's viewer in one pass every
REGISTRY_CHECK_INTERVAL. The pass reads the database directly rather than a cache stamp, so a key
revoked by a bulk update or a user changed in the shell is caught too; it costs one query per kind
of viewer per interval, and nothing while no socket is open. A viewer whose teams changed (a membership
added or removed, a key moved to another team) is closed with 4409 and reconnects with its new teams.
"""
from __future__ import annotations

import asyncio
import logging
import weakref
from dataclasses import dataclass
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.conf import settings

from orchestration.access.apikeys import cached_key, load_key
from orchestration.access.bearer import bearer_token
from orchestration.access.watching import (ALL_TEAMS, EVENTS_ALL_SCOPE, EVENTS_SCOPE, NotAllowed,  # noqa: F401
                                           key_teams, narrowed, team_id_of, user_teams)
from orchestration.models import APIKey, TeamMembership

logger = logging.getLogger(__name__)

# Close codes (documented in dashboard/protocol.py).
CLOSE_CREDENTIAL_GONE = 4401  # key revoked or deleted; user deleted or deactivated
CLOSE_NOT_ALLOWED = 4403  # key without `events`; user no longer a superuser nor in any team
CLOSE_TEAMS_CHANGED = 4409  # the viewer's teams changed: reconnect to watch the new ones


@dataclass(frozen=True)
class Viewer:
    kind: str  # "user" or "key"
    id: int
    teams: frozenset[int] | None = ALL_TEAMS  # what they watch: None = every team
    team_filter: int | None = None  # the team asked for with ?team=, kept to recompute `teams`


def team_filter_of(scope) -> tuple[bool, str | None]:
    """(asked, slug) from the handshake's `?team=<slug>`."""
    query = parse_qs((scope.get("query_string") or b"").decode("latin-1"))
    slugs = query.get("team")
    return (True, slugs[0]) if slugs else (False, None)


async def viewer_of(scope) -> Viewer | None:
    """Who opens this socket and which teams they watch, if they may: a session, else an API key with `events`."""
    asked, slug = team_filter_of(scope)
    try:
        team_filter = await database_sync_to_async(team_id_of)(slug) if asked else None
        user = scope.get("user")
        if user is not None and user.is_authenticated:
            teams = await database_sync_to_async(user_teams)(user)
            return Viewer("user", user.pk, narrowed(teams, team_filter), team_filter)
        raw = bearer_token(scope)
        if not raw:
            return None
        hit, info = cached_key(raw)
        if not hit:
            info = await database_sync_to_async(load_key)(raw)
        if info is None:
            return None
        return Viewer("key", info.id, narrowed(key_teams(info.scopes, info.team_id), team_filter), team_filter)
    except NotAllowed:
        return None


def lost_access(viewers: set[Viewer]) -> dict[Viewer, int]:
    """The viewers that may no longer watch what they watch, each with the close code that says why (sync)."""
    from django.contrib.auth import get_user_model

    lost = {}
    key_ids = {viewer.id for viewer in viewers if viewer.kind == "key"}
    keys = {row["id"]: row for row in APIKey.objects.filter(id__in=key_ids, revoked_at__isnull=True)
            .values("id", "scopes", "team_id")} if key_ids else {}
    user_ids = {viewer.id for viewer in viewers if viewer.kind == "user"}
    users, memberships = {}, {}
    if user_ids:
        users = dict(get_user_model().objects.filter(pk__in=user_ids, is_active=True)
                     .values_list("pk", "is_superuser"))
        for user_id, team_id in TeamMembership.objects.filter(user_id__in=user_ids).values_list("user_id", "team_id"):
            memberships.setdefault(user_id, set()).add(team_id)
    for viewer in viewers:
        if viewer.kind == "key":
            row = keys.get(viewer.id)
            if row is None:
                lost[viewer] = CLOSE_CREDENTIAL_GONE
                continue
            teams_now = lambda row=row: key_teams(row["scopes"], row["team_id"])  # noqa: E731
        else:
            if viewer.id not in users:
                lost[viewer] = CLOSE_CREDENTIAL_GONE
                continue
            teams_now = lambda viewer=viewer: _member_teams(users[viewer.id], memberships.get(viewer.id))  # noqa: E731
        try:
            if narrowed(teams_now(), viewer.team_filter) != viewer.teams:
                lost[viewer] = CLOSE_TEAMS_CHANGED
        except NotAllowed:
            lost[viewer] = CLOSE_NOT_ALLOWED
    return lost


def _member_teams(is_superuser: bool, teams: set[int] | None) -> frozenset[int] | None:
    if is_superuser:
        return ALL_TEAMS
    if not teams:
        raise NotAllowed
    return frozenset(teams)


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
