"""/api/workflows/: workflows with their current spec; staff create and update them.

A spec is validated on submit: 400 with `{"spec": ["root.steps[2].combine.strategy: must be one of …"]}`.
Changing the spec adds a version (versions are immutable; runs keep theirs).
"""
from django.db.models import Prefetch
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers, status, viewsets
from rest_framework.response import Response

from api.input import RejectUnknownFields
from orchestration.access.apikeys import KeyInfo
from orchestration.engine.spec import SpecInvalid
from orchestration.models import Workflow, WorkflowVersion
from orchestration.workflows import save_workflow


class WorkflowAccess(permissions.BasePermission):
    message = "Reading workflows needs the 'runs' or 'runs:read' scope; changing them, a staff session."

    def has_permission(self, request, view):
        if isinstance(request.auth, KeyInfo):
            return request.method in permissions.SAFE_METHODS and (
                request.auth.allows("runs") or request.auth.allows("runs:read"))
        return bool(request.user and request.user.is_authenticated and request.user.is_staff)


def current(workflow: Workflow) -> WorkflowVersion | None:
    versions = workflow.versions.all()  # prefetched newest first
    return versions[0] if versions else None


class WorkflowSerializer(serializers.ModelSerializer):
    version = serializers.SerializerMethodField()
    spec = serializers.SerializerMethodField()
    versions = serializers.SerializerMethodField()

    class Meta:
        model = Workflow
        fields = ["slug", "description", "enabled", "version", "spec", "versions", "created_at"]

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


class WorkflowViewSet(viewsets.ModelViewSet):
    permission_classes = [WorkflowAccess]
    serializer_class = WorkflowSerializer
    lookup_field = "slug"
    http_method_names = ["get", "post", "put", "patch", "head", "options"]

    def get_queryset(self):
        return Workflow.objects.prefetch_related(
            Prefetch("versions", queryset=WorkflowVersion.objects.order_by("-number")))

    def _save(self, request, *, slug: str, creating: bool):
        data = WorkflowWriteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        if creating and "spec" not in fields:
            return Response({"spec": ["This field is required."]}, status=status.HTTP_400_BAD_REQUEST)
        try:
            save_workflow(slug=slug, spec=fields.get("spec"), description=fields.get("description"),
                          enabled=fields.get("enabled"), actor=f"user:{request.user.get_username()}")
        except SpecInvalid as exc:
            return Response({"spec": exc.errors}, status=status.HTTP_400_BAD_REQUEST)
        workflow = self.get_queryset().get(slug=slug)
        return Response(WorkflowSerializer(workflow).data,
                        status=status.HTTP_201_CREATED if creating else status.HTTP_200_OK)

    @extend_schema(request=WorkflowWriteSerializer, responses={201: WorkflowSerializer})
    def create(self, request, *args, **kwargs):
        slug = request.data.get("slug") if isinstance(request.data, dict) else None
        if not slug:
            return Response({"slug": ["This field is required."]}, status=status.HTTP_400_BAD_REQUEST)
        if Workflow.objects.filter(slug=slug).exists():
            return Response({"slug": [f"A workflow '{slug}' already exists; update it instead."]},
                            status=status.HTTP_400_BAD_REQUEST)
        return self._save(request, slug=slug, creating=True)

    @extend_schema(request=WorkflowWriteSerializer, responses={200: WorkflowSerializer})
    def update(self, request, *args, **kwargs):
        workflow = self.get_object()
        return self._save(request, slug=workflow.slug, creating=False)
