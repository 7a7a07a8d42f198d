"""Which teams a watcher of live traffic sees (the control room's websocket, `podium_top`), and the models a set
of teams may call. Shared by dashboard/ and terminal/, which may not import each other.

`None` stands for every team (and runs with no team): superusers, operator keys. A team's key with `events`
watches its team; a key with no team and `events` (an operator's key, as before teams) and any key with
`events:all` watch every team. A member watches the teams of their memberships; a user in none may not watch.
"""
from __future__ import annotations

from orchestration.access.teams import of_teams, scope_for_user  # noqa: F401  (of_teams: dashboard/, terminal/)
from orchestration.models import Team

EVENTS_SCOPE = "events"
EVENTS_ALL_SCOPE = "events:all"
ALL_TEAMS = None


class NotAllowed(Exception):
    """This credential may not watch (or not the team it asked for)."""


def key_teams(scopes, team_id: int | None) -> frozenset[int] | None:
    """The teams a key watches; NotAllowed without an events scope."""
    scopes = set(scopes or ())
    if EVENTS_ALL_SCOPE in scopes or (EVENTS_SCOPE in scopes and team_id is None):
        return ALL_TEAMS
    if EVENTS_SCOPE in scopes:
        return frozenset({team_id})
    raise NotAllowed


def user_teams(user) -> frozenset[int] | None:
    """The teams a user watches (sync): every one for a superuser, else their memberships; NotAllowed if none."""
    scope = scope_for_user(user)
    if scope.everything:
        return ALL_TEAMS
    if not scope.team_ids:
        raise NotAllowed
    return scope.team_ids


def narrowed(teams: frozenset[int] | None, team_filter: int | None) -> frozenset[int] | None:
    """`teams` narrowed to the one asked for; NotAllowed when it is not among them."""
    if team_filter is None:
        return teams
    if teams is ALL_TEAMS or team_filter in teams:
        return frozenset({team_filter})
    raise NotAllowed


def team_id_of(slug: str | None) -> int:
    """The id of the team with this slug; NotAllowed for none, so an unknown team is refused like a forbidden one."""
    team_id = Team.objects.filter(slug=slug or "").values_list("id", flat=True).first()
    if team_id is None:
        raise NotAllowed
    return team_id


def chosen_models_and_routes(teams) -> tuple[set[str], set[str]] | None:
    """(model aliases, route alias names) any of `teams` chose; None = every one (a team that chose none, or no
    scoping). Three queries for a team scope, none otherwise."""
    if teams is None:
        return None
    models: set[str] = set()
    routes: set[str] = set()
    for team in Team.objects.filter(id__in=list(teams)).prefetch_related("allowed_models", "allowed_route_aliases"):
        team_models = {m.alias for m in team.allowed_models.all()}
        team_routes = {r.name for r in team.allowed_route_aliases.all()}
        if not team_models and not team_routes:
            return None  # this team may call every model
        models |= team_models
        routes |= team_routes
    return models, routes


def callable_targets(teams) -> set[str] | None:
    """The model and route aliases any of `teams` may call; None = every one."""
    chosen = chosen_models_and_routes(teams)
    return None if chosen is None else chosen[0] | chosen[1]
