"""/api/teams/: the teams a caller sees, with members and roles, what the team may call, budgets and its default
data class. Admins of a team (and superusers) may PATCH its budgets and default data class.

A team's key sees its own team; a person sees the teams they are a member of (superusers all; api/scoping.py).
Any other team is a 404, as one that does not exist.
"""
from django.db.models import Prefetch
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.response import Response

from api.input import RejectUnknownFields
from api.scoping import Role, visibility
from orchestration.access.apikeys import KeyInfo
from orchestration.models import Team, TeamMembership
from orchestration.models.registry import DATA_CLASSES


class MemberSerializer(serializers.Serializer):
    username = serializers.CharField(source="user.username")
    role = serializers.CharField()


class TeamSerializer(serializers.ModelSerializer):
    members = MemberSerializer(source="memberships", many=True, read_only=True)
    allowed_models = serializers.SlugRelatedField(slug_field="alias", many=True, read_only=True,
                                                  help_text="Empty here and in allowed_route_aliases = every model.")
    allowed_route_aliases = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)
    your_role = serializers.SerializerMethodField(help_text="The caller's role here (null for keys and superusers "
                                                            "who are not members).")

    class Meta:
        model = Team
        fields = ["slug", "name", "your_role", "members", "allowed_models", "allowed_route_aliases",
                  "default_data_class", "budget_usd_per_day", "budget_usd_per_month", "tokens_per_minute",
                  "created_at"]

    def get_your_role(self, team) -> str | None:
        return self.context.get("roles", {}).get(team.id)


class TeamUpdateSerializer(RejectUnknownFields, serializers.Serializer):
    default_data_class = serializers.ChoiceField(choices=["", *DATA_CLASSES], required=False)
    budget_usd_per_day = serializers.DecimalField(max_digits=12, decimal_places=4, min_value=0, required=False,
                                                  allow_null=True)
    budget_usd_per_month = serializers.DecimalField(max_digits=12, decimal_places=4, min_value=0, required=False,
                                                    allow_null=True)
    tokens_per_minute = serializers.IntegerField(min_value=0, required=False, allow_null=True)


LIMIT_FIELDS = ("budget_usd_per_day", "budget_usd_per_month", "tokens_per_minute")


def raises_a_limit(team: Team, changes: dict) -> bool:
    """Whether the changes remove a limit the team has or set one higher (None = no limit)."""
    for name in LIMIT_FIELDS:
        if name in changes and getattr(team, name) is not None and (
                changes[name] is None or changes[name] > getattr(team, name)):
            return True
    return False


class TeamViewSet(mixins.UpdateModelMixin, viewsets.ReadOnlyModelViewSet):
    serializer_class = TeamSerializer
    lookup_field = "slug"
    http_method_names = ["get", "patch", "head", "options"]

    def get_queryset(self):
        teams = Team.objects.prefetch_related(
            Prefetch("memberships", queryset=TeamMembership.objects.select_related("user").order_by("user__username")),
            "allowed_models", "allowed_route_aliases")
        view = visibility(self.request)
        return teams if view.everything else teams.filter(pk__in=list(view.teams.roles))

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if not isinstance(self.request.auth, KeyInfo):
            context["roles"] = visibility(self.request).teams.roles
        return context

    @extend_schema(request=TeamUpdateSerializer, responses=TeamSerializer)
    def partial_update(self, request, *args, **kwargs):
        team = self.get_object()  # a team the caller does not see: 404
        if isinstance(request.auth, KeyInfo) or not visibility(request).has_role(team.id, Role.ADMIN):
            return Response({"detail": "Only the team's admins change its budgets and default data class."},
                            status=status.HTTP_403_FORBIDDEN)
        body = TeamUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        if not visibility(request).everything and raises_a_limit(team, body.validated_data):
            return Response({"detail": "A team's admins may set or lower its budgets and tokens per minute; raising "
                                       "or removing one is for an operator (superuser)."},
                            status=status.HTTP_403_FORBIDDEN)
        for name, value in body.validated_data.items():
            setattr(team, name, value)
        if body.validated_data:
            team.save(update_fields=list(body.validated_data))  # signals clear the key cache (orchestration/signals.py)
        return Response(TeamSerializer(self.get_queryset().get(pk=team.pk), context=self.get_serializer_context()).data)
