"""The admin is how admins configure Podium: providers, models, routes, teams, API keys."""
from django.contrib import admin, messages
from django.utils.html import format_html

from orchestration.models import (APIKey, LLMModel, Provider, RouteAlias, Run, Step, Team, TeamMembership,
                                  WriterDeadLetter)


class ModelInline(admin.TabularInline):
    model = LLMModel
    extra = 0
    fields = ["alias", "upstream_name", "tier", "price_in_per_m", "price_out_per_m", "enabled"]
    show_change_link = True


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "base_url", "api_key_env", "is_local", "max_concurrency", "timeout_s", "enabled"]
    list_filter = ["kind", "is_local", "enabled"]
    search_fields = ["name", "base_url"]
    inlines = [ModelInline]


@admin.register(LLMModel)
class LLMModelAdmin(admin.ModelAdmin):
    list_display = ["alias", "provider", "upstream_name", "tier", "price_in_per_m", "price_out_per_m",
                    "quality_prior", "context_window", "enabled"]
    list_filter = ["tier", "enabled", "provider"]
    search_fields = ["alias", "upstream_name", "provider__name"]
    list_select_related = ["provider"]


@admin.register(RouteAlias)
class RouteAliasAdmin(admin.ModelAdmin):
    list_display = ["name", "strategy", "candidates", "enabled"]
    list_filter = ["strategy", "enabled"]
    search_fields = ["name"]


class MembershipInline(admin.TabularInline):
    model = TeamMembership
    extra = 1
    fields = ["user", "role", "created_at"]
    readonly_fields = ["created_at"]
    autocomplete_fields = ["user"]


class TeamKeyInline(admin.TabularInline):
    """The team's keys at a glance; a key is issued and edited on its own page (the raw value is shown once)."""
    model = APIKey
    extra = 0
    can_delete = False
    fields = ["name", "prefix", "scopes", "data_class", "budget_usd_per_day", "budget_usd_per_month", "revoked_at"]
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "default_data_class", "budget_usd_per_day", "budget_usd_per_month",
                    "tokens_per_minute", "member_count", "created_at"]
    search_fields = ["slug", "name"]
    filter_horizontal = ["allowed_models", "allowed_route_aliases"]
    readonly_fields = ["created_at"]
    fieldsets = [
        (None, {"fields": ["slug", "name", "default_data_class", "created_at"]}),
        ("What the team may call (none chosen in both = every model and route alias)",
         {"fields": ["allowed_models", "allowed_route_aliases"]}),
        ("Budgets (shared by all the team's keys; empty = none)",
         {"fields": ["budget_usd_per_day", "budget_usd_per_month", "tokens_per_minute"]}),
    ]
    inlines = [MembershipInline, TeamKeyInline]

    @admin.display(description="members")
    def member_count(self, team):
        return team.memberships.count()


@admin.register(TeamMembership)
class TeamMembershipAdmin(admin.ModelAdmin):
    list_display = ["team", "user", "role", "created_at"]
    list_filter = ["role", "team"]
    search_fields = ["team__slug", "user__username"]
    list_select_related = ["team", "user"]
    autocomplete_fields = ["user", "team"]


@admin.register(APIKey)
class APIKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "team", "scopes", "data_class", "budget_usd", "budget_usd_per_day",
                    "budget_usd_per_month", "spent_usd", "created_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter), "team", "data_class"]
    search_fields = ["name", "prefix", "team__slug"]
    list_select_related = ["team"]
    readonly_fields = ["prefix", "spent_usd", "created_at"]
    fields = ["name", "team", "scopes", "data_class", "budget_usd", "budget_usd_per_day", "budget_usd_per_month",
              "requests_per_minute", "tokens_per_minute", "revoked_at", "prefix", "spent_usd", "created_at"]
    actions = ["revoke_keys"]

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        key, raw = APIKey.issue(obj.name, scopes=obj.scopes or None, budget_usd=obj.budget_usd,
                                requests_per_minute=obj.requests_per_minute, tokens_per_minute=obj.tokens_per_minute,
                                team=obj.team, data_class=obj.data_class, budget_usd_per_day=obj.budget_usd_per_day,
                                budget_usd_per_month=obj.budget_usd_per_month)
        obj.pk, obj.prefix, obj.key_hash, obj.created_at = key.pk, key.prefix, key.key_hash, key.created_at
        obj._state.adding = False
        # Shown once, here; only its digest is stored.
        messages.warning(request, format_html("New API key (copy it now, it will not be shown again): <code>{}</code>", raw))

    @admin.action(description="Revoke selected keys")
    def revoke_keys(self, request, queryset):
        for key in queryset.filter(revoked_at__isnull=True):
            key.revoke()


class StepInline(admin.TabularInline):
    model = Step
    extra = 0
    can_delete = False
    fields = ["key", "model_alias", "status", "tokens_in", "tokens_out", "cost_usd", "latency_ms", "error"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["id", "target", "kind", "status", "team", "tokens_in", "tokens_out", "cost_usd", "latency_ms",
                    "created_at"]
    list_filter = ["status", "kind", "team"]
    search_fields = ["id", "target"]
    inlines = [StepInline]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(WriterDeadLetter)
class WriterDeadLetterAdmin(admin.ModelAdmin):
    """Rows the batched writer could never store: read them, then delete them once dealt with."""
    list_display = ["created_at", "model_label", "object_id", "api_key_id", "cost_usd", "short_reason"]
    list_filter = ["model_label"]
    search_fields = ["object_id", "reason"]
    date_hierarchy = "created_at"

    @admin.display(description="reason")
    def short_reason(self, obj):
        return obj.reason[:120]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


from orchestration import workflow_admin  # noqa: E402,F401  (Workflow and WorkflowVersion admins)
