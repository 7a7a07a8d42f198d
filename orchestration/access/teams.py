"""Which teams a person may see and what they may do there.

Superusers see every team (and rows with no team); everyone else sees the teams they are a member of,
with the role that membership gives. Views filter rows with `of_teams(queryset, field, team_ids)`.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Q, QuerySet

from orchestration.models import TeamMembership

ROLE_RANK = {TeamMembership.Role.VIEWER: 1, TeamMembership.Role.REVIEWER: 2, TeamMembership.Role.ADMIN: 3}


@dataclass(frozen=True)
class TeamScope:
    """All teams (`everything`), or the listed team ids with the member's role in each."""
    everything: bool
    roles: dict[int, str]

    @property
    def team_ids(self) -> frozenset[int]:
        return frozenset(self.roles)

    def sees(self, team_id: int | None) -> bool:
        return self.everything or (team_id is not None and team_id in self.roles)

    def has_role(self, team_id: int | None, role: str) -> bool:
        """Whether the person holds `role` (or a higher one) in the team; superusers hold every role."""
        if self.everything:
            return True
        held = self.roles.get(team_id) if team_id is not None else None
        return held is not None and ROLE_RANK[held] >= ROLE_RANK[role]



def of_teams(queryset: QuerySet, field: str, teams, *, with_no_team: bool = False) -> QuerySet:
    """The rows of `queryset` whose team (by `field`, a team FK path) is one of `teams` (None = every row);
    `with_no_team` adds the rows with no team (workflows shared with every team, the operator space)."""
    if teams is None:
        return queryset
    condition = Q(**{f"{field}__in": list(teams)})
    if with_no_team:
        condition |= Q(**{f"{field}__isnull": True})
    return queryset.filter(condition)


EVERYTHING = TeamScope(everything=True, roles={})
NOTHING = TeamScope(everything=False, roles={})


def scope_for_user(user) -> TeamScope:
    """A superuser sees all teams; a member sees their teams; anyone else sees none."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return NOTHING
    if user.is_superuser:
        return EVERYTHING
    rows = TeamMembership.objects.filter(user=user).values_list("team_id", "role")
    return TeamScope(everything=False, roles=dict(rows))
