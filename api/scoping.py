"""Which rows a caller of /api sees: the one place views ask, so every endpoint scopes the same way.

- A superuser session sees everything (and may narrow a list with `?team=<slug>`).
- Any other session sees the teams it is a member of (`orchestration/access/teams.py`), with its role in each;
  staff also see the operator space: rows with no team, as before teams (for review items, members of the
  `reviewers` group too, as before teams).
- An API key of a team sees that team only. A key with no team is an operator's key (only admins issue keys):
  it sees everything, as before teams.

Another team's row is not found (404), never "forbidden": its existence is not revealed.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet

from orchestration.access.apikeys import KeyInfo
from orchestration.access.teams import EVERYTHING, TeamScope, of_teams, scope_for_user
from orchestration.access.watching import chosen_models_and_routes
from orchestration.models import LLMModel, TeamMembership
from orchestration.reviews.selectors import DECIDE_PERMISSION

Role = TeamMembership.Role


@dataclass(frozen=True)
class Visibility:
    """The teams a caller sees (`teams`, with roles) and whether it sees the operator space (no team): rows in
    general (`operator_space`) and review items (`operator_reviews`)."""
    teams: TeamScope
    operator_space: bool
    key: KeyInfo | None = None
    operator_reviews: bool = False

    @property
    def everything(self) -> bool:
        return self.teams.everything

    @property
    def any_access(self) -> bool:
        return self.everything or self.operator_space or bool(self.teams.roles)

    def sees(self, team_id: int | None) -> bool:
        if team_id is None:
            return self.everything or self.operator_space
        return self.teams.sees(team_id)

    def has_role(self, team_id: int | None, role: str) -> bool:
        """The role (or a higher one) in the team; in the operator space, staff act as they did before teams."""
        if team_id is None:
            return self.everything or self.operator_space
        return self.teams.has_role(team_id, role)

    def filter(self, queryset: QuerySet, field: str = "team", *, shared: bool = False,
               reviews: bool = False) -> QuerySet:
        """The rows this caller sees by `field` (a team FK path); `shared` also shows rows with no team
        (workflows: a workflow with no team is shared with every team); `reviews`: review items."""
        return of_teams(queryset, field, None if self.everything else self.teams.roles,
                        with_no_team=shared or (self.operator_reviews if reviews else self.operator_space))

    def team_ids_for_models(self) -> list[int] | None:
        """The teams whose model lists bound what this caller may see; None = every model."""
        if self.everything or self.operator_space:
            return None
        return list(self.teams.roles)


def visibility(request) -> Visibility:
    """The caller's visibility, computed once per request (one query for a person's memberships)."""
    cached = getattr(request, "_podium_visibility", None)
    if cached is None:
        cached = request._podium_visibility = _visibility(request)
    return cached


def _visibility(request) -> Visibility:
    auth = request.auth
    if isinstance(auth, KeyInfo):
        if auth.team is None:
            return Visibility(teams=EVERYTHING, operator_space=True, key=auth, operator_reviews=True)
        return Visibility(teams=TeamScope(everything=False, roles={auth.team.id: Role.VIEWER}),
                          operator_space=False, key=auth)
    user = request.user
    scope = scope_for_user(user)
    active = bool(getattr(user, "is_authenticated", False) and user.is_active)
    return Visibility(teams=scope, operator_space=active and user.is_staff,
                      operator_reviews=active and (user.is_staff or user.has_perm(DECIDE_PERMISSION)))


def team_filter(request, queryset: QuerySet, field: str = "team") -> QuerySet:
    """`?team=<slug>` on a list: any caller may narrow to a team they see (superusers: any team; "none" = the
    operator space). A team the caller does not see gives an empty list, as one that does not exist."""
    slug = request.query_params.get("team")
    if not slug:
        return queryset
    if slug == "none":
        return queryset.filter(**{f"{field}__isnull": True})
    return queryset.filter(**{f"{field}__slug": slug[:64]})


def allowed_models(view: Visibility) -> QuerySet:
    """The models the caller may see: the union of their teams' allowed models (a team with no model and no
    route alias chosen may call every model). A route alias a team may call does not list its candidates."""
    models = LLMModel.objects.select_related("provider")
    chosen = chosen_models_and_routes(view.team_ids_for_models())
    return models if chosen is None else models.filter(alias__in=chosen[0])


def may_see_model(view: Visibility, alias: str) -> bool:
    if view.key is not None:
        return view.key.may_call(alias)
    return allowed_models(view).filter(alias=alias).exists()
