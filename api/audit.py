"""/api/audit/: the audit trail (review decisions, workflow versions, configuration changes), newest first.

Superusers read every entry and may narrow to `?team=<slug>` (`none`: entries of no team); a team's admins
read their teams' entries (orchestration/access/audit.py); everyone else, API keys included, gets 403.
`?action=` keeps the actions that start with it (`config.`, `config.api_key.`, `review.`). Read only: the trail
is append-only, and its diffs were masked when recorded (no secret is ever stored).
"""
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, permissions, serializers

from api.scoping import visibility
from orchestration.access.apikeys import KeyInfo
from orchestration.access.audit import audit_events, may_read_audit
from orchestration.models import AuditEvent, Team


class AuditAccess(permissions.BasePermission):
    message = "The audit trail is read by superusers and by a team's admins (their team's entries); not by API keys."

    def has_permission(self, request, view):
        if isinstance(request.auth, KeyInfo):
            return False
        return bool(request.user and request.user.is_authenticated and may_read_audit(visibility(request).teams))


class AuditEventSerializer(serializers.ModelSerializer):
    team = serializers.SerializerMethodField(help_text="The slug of the team the entry concerns; null = no team")

    class Meta:
        model = AuditEvent
        fields = ["id", "created_at", "actor", "action", "subject", "team", "data", "prev_hash", "hash"]

    def get_team(self, event) -> str | None:
        team_id = event.data.get("team") if isinstance(event.data, dict) else None
        return self.context.get("team_slugs", {}).get(team_id) if team_id is not None else None


@extend_schema(parameters=[
    OpenApiParameter("action", str, description="Keep actions starting with this: config., review., config.team."),
    OpenApiParameter("team", str, description="A team's slug, or 'none' for entries of no team (superusers)"),
])
class AuditList(generics.ListAPIView):
    permission_classes = [AuditAccess]
    serializer_class = AuditEventSerializer

    def get_queryset(self):
        scope = visibility(self.request).teams
        params = self.request.query_params
        slug = params.get("team", "")
        team_id, operator_only = None, False
        if slug == "none":
            operator_only = True
        elif slug:
            # A team unknown or not read by the caller gives an empty list, as one that does not exist.
            team_id = Team.objects.filter(slug=slug[:64]).values_list("pk", flat=True).first() or -1
        return audit_events(scope, action_prefix=params.get("action", ""), team_id=team_id,
                            operator_only=operator_only)

    def get_serializer(self, *args, **kwargs):
        if args and isinstance(args[0], list):  # one query for the page's team slugs
            ids = {e.data.get("team") for e in args[0] if isinstance(e.data, dict) and e.data.get("team")}
            kwargs.setdefault("context", self.get_serializer_context())["team_slugs"] = dict(
                Team.objects.filter(pk__in=ids).values_list("pk", "slug"))
        return super().get_serializer(*args, **kwargs)
