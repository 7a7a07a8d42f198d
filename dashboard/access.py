"""Who may use the control room's pages, and which teams a page shows them.

Being a member of a team is enough to sign in to the control room (its own login page: the admin's only
lets staff in, and the admin stays superuser/staff-only). A superuser sees every team and rows with no
team; anyone else sees the teams they are a member of (orchestration/access/teams.py). Every list page
takes `?team=<slug>` to show one team: a superuser may pick any, a member one of theirs. A team one may
not see, an unknown slug and an object of another team all answer 404 alike: never a hint.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView, redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404
from django.urls import reverse, reverse_lazy

from orchestration.access.login_throttle import throttled_login_error
from orchestration.access.teams import TeamScope, of_teams, scope_for_user
from orchestration.models import Team, TeamMembership


@dataclass(frozen=True)
class PageScope:
    """The person's teams (`person`), the team picked with ?team= (or None), and what the page shows."""
    person: TeamScope
    team: Team | None
    choices: tuple[Team, ...]  # what the team selector offers

    @property
    def teams(self) -> frozenset[int] | None:
        """The team ids the page shows; None = every team and rows with no team."""
        if self.team is not None:
            return frozenset({self.team.id})
        return None if self.person.everything else self.person.team_ids

    def filter(self, queryset: QuerySet, field: str = "team", *, shared: bool = False) -> QuerySet:
        """The rows of `queryset` the page shows, by `field` (a team FK path); `shared` adds rows with no team
        (workflows shared with every team)."""
        return of_teams(queryset, field, self.teams, with_no_team=shared)

    def sees(self, team_id: int | None) -> bool:
        teams = self.teams
        return teams is None or (team_id is not None and team_id in teams)

    def may_decide(self, team_id: int | None) -> bool:
        """Reviewers and admins of the run's team decide its reviews; superusers decide every one."""
        return self.person.has_role(team_id, TeamMembership.Role.REVIEWER)

    @property
    def decide_teams(self) -> list[int] | None:
        """The team ids whose reviews the person may decide (None = every one: a superuser)."""
        if self.person.everything:
            return None
        return sorted(team for team in (self.teams or ()) if self.may_decide(team))

    @property
    def may_decide_any(self) -> bool:
        teams = self.teams
        if self.person.everything:
            return True
        return any(self.may_decide(team) for team in (teams or ()))


def page_scope(request) -> PageScope:
    """The scope of a control room page; Http404 for a ?team= the person may not see (or no such team)."""
    person = scope_for_user(request.user)
    teams = Team.objects.order_by("slug")
    choices = tuple(teams if person.everything else teams.filter(id__in=list(person.team_ids)))
    slug = request.GET.get("team")
    team = None
    if slug:
        team = next((choice for choice in choices if choice.slug == slug), None)
        if team is None:
            raise Http404("No such team.")
    return PageScope(person=person, team=team, choices=choices)


def control_room(view):
    """Sign in first (the control room's login page); then superusers and members of a team only.
    The view gets `request.teams`, its PageScope."""
    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path(), reverse("dashboard:login"))
        scope = page_scope(request)
        if not scope.person.everything and not scope.person.team_ids:
            raise PermissionDenied("The control room is for members of a team.")
        request.teams = scope
        return view(request, *args, **kwargs)
    return wrapped


class ControlRoomLoginForm(AuthenticationForm):
    """Any active user may sign in (the pages then check their teams); says when to try again while throttled,
    as the admin's form does (orchestration/access/login_throttle.py)."""

    def get_invalid_login_error(self):
        return throttled_login_error(self.request) or super().get_invalid_login_error()


login = LoginView.as_view(template_name="dashboard/login.html", authentication_form=ControlRoomLoginForm,
                          next_page=reverse_lazy("dashboard:overview"), redirect_authenticated_user=True)
