"""Teams: the boundary of who sees what, who may call which model, and who pays.

A team has members (users, each with a role), API keys, the models and route aliases it may use
(none chosen = all), budgets, and a default data class for requests that name none. Rows that
belong to a team (runs, workflows, keys) carry `team`; `team = NULL` means "no team": visible to
superusers (and, for workflows, shared with every team).
"""
from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models

from orchestration.models.registry import DATA_CLASSES


class Team(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    allowed_models = models.ManyToManyField(
        "orchestration.LLMModel", blank=True, related_name="teams",
        help_text="Models this team may call. None chosen (here and in route aliases) = every model.")
    allowed_route_aliases = models.ManyToManyField(
        "orchestration.RouteAlias", blank=True, related_name="teams",
        help_text="Route aliases this team may call.")
    default_data_class = models.CharField(
        max_length=32, blank=True, choices=[(c, c) for c in DATA_CLASSES],
        help_text="The data class of a request that names none and whose key has none.")
    budget_usd_per_day = models.DecimalField("budget per day (USD)", max_digits=12, decimal_places=4, null=True,
                                             blank=True, validators=[MinValueValidator(0)],
                                             help_text="Shared by all the team's keys. Empty = no budget.")
    budget_usd_per_month = models.DecimalField("budget per month (USD)", max_digits=12, decimal_places=4,
                                               null=True, blank=True, validators=[MinValueValidator(0)])
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class TeamMembership(models.Model):
    class Role(models.TextChoices):
        VIEWER = "viewer", "viewer (sees the team's runs and live views)"
        REVIEWER = "reviewer", "reviewer (also decides the team's reviews)"
        ADMIN = "admin", "admin (also manages the team's keys, workflows and budgets)"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="team_memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["team", "user"]
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="team_membership_unique")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"
