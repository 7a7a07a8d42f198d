"""Who may read the audit trail, and which entries.

Superusers read every entry. A team's admins (role admin) read the entries of their teams: those whose data
carries `"team": <id>` (configuration of the team, its members, keys and workflows, in
orchestration/config_audit.py; review events on its runs, in orchestration/reviews/actions.py; its workflows'
new versions). Entries with no team (providers, models, route aliases, operator keys, shared workflows) are the
superusers' only. Nobody else reads the trail — API keys included: it records who did what to configuration
and is read by people.
"""
from __future__ import annotations

from django.db.models import QuerySet

from orchestration.access.teams import TeamScope
from orchestration.models import AuditEvent, TeamMembership

ACTION_PREFIX_MAX = 64  # AuditEvent.action's length


def audit_team_ids(scope: TeamScope) -> list[int] | None:
    """The teams whose entries the scope reads; None = every entry (superusers); [] = none."""
    if scope.everything:
        return None
    return sorted(team for team, role in scope.roles.items() if role == TeamMembership.Role.ADMIN)


def may_read_audit(scope: TeamScope) -> bool:
    return audit_team_ids(scope) != []


def audit_events(scope: TeamScope, *, action_prefix: str = "", team_id: int | None = None,
                 operator_only: bool = False) -> QuerySet:
    """The entries the scope reads, newest first; narrowed to an action prefix (`config.`, `review.`), to one
    team (`team_id`) or to the entries of no team (`operator_only`)."""
    events = AuditEvent.objects.order_by("-id")
    teams = audit_team_ids(scope)
    if teams is not None:
        events = events.filter(data__team__in=teams)
    if action_prefix:
        events = events.filter(action__startswith=action_prefix[:ACTION_PREFIX_MAX])
    if team_id is not None:
        events = events.filter(data__team=team_id)
    elif operator_only:
        events = events.filter(data__team__isnull=True)
    return events
