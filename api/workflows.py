"""/api/workflows/: workflows with their current spec; staff create and update them.

A spec is validated on submit: 400 with `{"spec": ["root.steps[2].combine.strategy: must be one of …"]}`.
Changing the spec adds a version (versions are immutable; runs keep theirs).

Teams: a workflow belongs to a team or, with no team, is shared with every team. Callers see their teams'
workflows and the shared ones (api/scoping.py); another team's workflow is a 404. Admins of a team create
and change its workflows; shared ones are changed by staff, as before teams.
"""
from django.db.models import Prefetch
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers, status, viewsets
from rest_framework.response import Response

from api.input import RejectUnknownFields
from api.scoping import Role, team_filter, visibility
from orchestration.access.apikeys import KeyInfo
from orchestration.engine.spec import SpecInvalid
from orchestration.models import Team, Workflow, WorkflowVersion
from orchestration.workflows import save_workflow


class WorkflowAccess(permissions.BasePermission):
    message = ("Reading workflows needs the 'runs' or 'runs:read' scope; changing them, a staff session or the "
               "admin role in the workflow's team.")

    def has_permission(self, request, view):
        if isinstance(request.auth, KeyInfo):
            return request.method in permissions.SAFE_METHODS and (
                request.auth.allows("runs") or request.auth.allows("runs:read"))
        return bool(request.user and request.user.is_authenticated and visibility(request).any_access)


def may_change(request, team_id: int | None) -> bool:
    """A team's workflow: the team's admins (and superusers); a shared one: staff, as before teams."""
    if team_id is None:
        return bool(request.user.is_superuser or request.user.is_staff)
    return visibility(request).has_role(team_id, Role.ADMIN)


def current(workflow: Workflow) -> WorkflowVersion | None:
    versions = workflow.versions.all()  # prefetched newest first
    return versions[0] if versions else None


class WorkflowSerializer(serializers.ModelSerializer):
    version = serializers.SerializerMethodField()
    spec = serializers.SerializerMethodField()
    versions = serializers.SerializerMethodField()
    team = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True,
                                        help_text="null = shared with every team")

    class Meta:
        model = Workflow
        fields = ["slug", "team", "description", "enabled", "version", "spec", "versions", "created_at"]

    def get_version(self, workflow) -> int | None:
        version = current(workflow)
        return version.number if version else None

    def get_spec(self, workflow) -> dict | None:
        version = current(workflow)
        return version.spec if version else None

    def get_versions(self, workflow) -> list[dict]:
        return [{"number": v.number, "created_at": v.created_at} for v in workflow.versions.all()]


class WorkflowWriteSerializer(RejectUnknownFields, serializers.Serializer):
    slug = serializers.SlugField(max_length=100, required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    enabled = serializers.BooleanField(required=False)
    spec = serializers.JSONField(required=False)
    team = serializers.SlugField(required=False, allow_null=True,
                                 help_text="The owning team's slug (you must be its admin); null = shared.")


class WorkflowViewSet(viewsets.ModelViewSet):
    permission_classes = [WorkflowAccess]
    serializer_class = WorkflowSerializer
    lookup_field = "slug"
    http_method_names = ["get", "post", "put", "patch", "head", "options"]

    def get_queryset(self):
        queryset = Workflow.objects.select_related("team").prefetch_related(
            Prefetch("versions", queryset=WorkflowVersion.objects.order_by("-number")))
        return team_filter(self.request, visibility(self.request).filter(queryset, "team", shared=True))

    def _save(self, request, *, slug: str, creating: bool, current_team: int | None = None):
        data = WorkflowWriteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        if creating and "spec" not in fields:
            return Response({"spec": ["This field is required."]}, status=status.HTTP_400_BAD_REQUEST)
        team_id = current_team
        if "team" in fields:
            team_id = None
            if fields["team"]:
                team_id = Team.objects.filter(slug=fields["team"]).values_list("id", flat=True).first()
                if team_id is None or not visibility(request).sees(team_id):
                    return Response({"team": [f"You are not a member of a team '{fields['team']}'."]},
                                    status=status.HTTP_400_BAD_REQUEST)
        if not all(may_change(request, team) for team in ({team_id} if creating else {current_team, team_id})):
            return Response({"detail": "Changing a team's workflow needs the admin role in that team; a shared "
                                       "workflow, a staff session."}, status=status.HTTP_403_FORBIDDEN)
        try:
            save_workflow(slug=slug, spec=fields.get("spec"), description=fields.get("description"),
                          enabled=fields.get("enabled"), actor=f"user:{request.user.get_username()}",
                          team_id=team_id)
        except SpecInvalid as exc:
            return Response({"spec": exc.errors}, status=status.HTTP_400_BAD_REQUEST)
        workflow = Workflow.objects.prefetch_related(
            Prefetch("versions", queryset=WorkflowVersion.objects.order_by("-number"))).get(slug=slug)
        return Response(WorkflowSerializer(workflow).data,
                        status=status.HTTP_201_CREATED if creating else status.HTTP_200_OK)

    @extend_schema(request=WorkflowWriteSerializer, responses={201: WorkflowSerializer})
    def create(self, request, *args, **kwargs):
        slug = request.data.get("slug") if isinstance(request.data, dict) else None
        if not slug:
            return Response({"slug": ["This field is required."]}, status=status.HTTP_400_BAD_REQUEST)
        if Workflow.objects.filter(slug=slug).exists():  # slugs are global; one answer whoever's it is
            return Response({"slug": [f"The slug '{slug}' is not available: update your workflow of that name, "
                                      f"or choose another."]}, status=status.HTTP_400_BAD_REQUEST)
        return self._save(request, slug=slug, creating=True, current_team=self._default_team(request))

    @staticmethod
    def _default_team(request) -> int | None:
        """A new workflow's team when the body names none: the person's only team unless they are staff."""
        view = visibility(request)
        if view.operator_space or view.everything or len(view.teams.roles) != 1:
            return None
        return next(iter(view.teams.roles))

    @extend_schema(request=WorkflowWriteSerializer, responses={200: WorkflowSerializer})
    def update(self, request, *args, **kwargs):
        workflow = self.get_object()  # another team's workflow: 404
        return self._save(request, slug=workflow.slug, creating=False, current_team=workflow.team_id)
