"""/api/runs/: start a workflow run (202), read runs with their step tree, cancel.

API keys need the `runs` scope to start or cancel (`runs` or `runs:read` to read) and see only
the runs they started; staff sessions see and may act on every run. A start with an `Idempotency-Key`
header is done once per key and body (orchestration/runs/actions.py `start_run_once`).
"""
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from api.input import RejectUnknownFields, query_choices
from api.serializers import RunDetailSerializer, RunSerializer
from orchestration.access.apikeys import KeyInfo
from orchestration.models import Run
from orchestration.models.runs import RunStatus
from orchestration.runs.actions import (IdempotencyConflict, WorkflowNotFound, cancel_run, start_run, start_run_once,
                                        valid_idempotency_key)
from orchestration.runs.selectors import step_tree


class RunsAccess(permissions.BasePermission):
    message = "API keys need the 'runs' scope (or 'runs:read' to read); sessions must be staff."

    def has_permission(self, request, view):
        if isinstance(request.auth, KeyInfo):
            if request.method in permissions.SAFE_METHODS:
                return request.auth.allows("runs") or request.auth.allows("runs:read")
            return request.auth.allows("runs")
        return bool(request.user and request.user.is_authenticated and request.user.is_staff)


class WorkflowRunFields(serializers.Serializer):
    workflow = serializers.SerializerMethodField()
    workflow_version = serializers.SerializerMethodField()

    def get_workflow(self, run) -> str | None:
        return run.workflow_version.workflow.slug if run.workflow_version_id else None

    def get_workflow_version(self, run) -> int | None:
        return run.workflow_version.number if run.workflow_version_id else None


class RunListSerializer(RunSerializer, WorkflowRunFields):
    class Meta(RunSerializer.Meta):
        fields = RunSerializer.Meta.fields + ["workflow", "workflow_version"]


class RunTreeSerializer(RunDetailSerializer, WorkflowRunFields):
    step_tree = serializers.SerializerMethodField()

    class Meta(RunDetailSerializer.Meta):
        fields = RunDetailSerializer.Meta.fields + ["workflow", "workflow_version", "budget_usd", "deadline_at",
                                                    "step_tree"]

    def get_step_tree(self, run) -> list[dict]:
        """Steps nested under their parents (each with its id, key, type, model, status and children)."""
        return step_tree(run.steps.all())


MAX_DEADLINE_S = 30 * 24 * 3600  # a run may wait days at a review gate; beyond a month is a mistake


class RunCreateSerializer(RejectUnknownFields, serializers.Serializer):
    workflow = serializers.SlugField(help_text="The workflow's slug.")
    input = serializers.JSONField(help_text="Text or any JSON; templates read it as {{input}}.")
    metadata = serializers.DictField(required=False, default=dict)
    budget_usd = serializers.DecimalField(max_digits=12, decimal_places=6, min_value=0, required=False,
                                          allow_null=True)
    deadline_s = serializers.FloatField(min_value=0.001, max_value=MAX_DEADLINE_S, required=False, allow_null=True)


def run_metadata(fields: dict, auth) -> dict:
    """The run's metadata; its `data_class` (what its steps are held to) is the request's, else the key's or the
    key's team's default."""
    metadata = dict(fields.get("metadata") or {})
    if not metadata.get("data_class") and isinstance(auth, KeyInfo) and auth.default_data_class:
        metadata["data_class"] = auth.default_data_class
    return metadata


@extend_schema_view(list=extend_schema(parameters=[
    OpenApiParameter("status", str, description="Comma-separated run statuses: " + ", ".join(RunStatus.values)),
    OpenApiParameter("kind", str, description="Comma-separated run kinds: " + ", ".join(Run.Kind.values))]))
class RunViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    permission_classes = [RunsAccess]

    def get_queryset(self):
        queryset = Run.objects.select_related("workflow_version__workflow")
        if isinstance(self.request.auth, KeyInfo):
            queryset = queryset.filter(api_key_id=self.request.auth.id)
        if self.action == "retrieve":
            queryset = queryset.prefetch_related("steps")
        statuses = query_choices(self.request, "status", RunStatus.values)
        if statuses:
            queryset = queryset.filter(status__in=statuses)
        kinds = query_choices(self.request, "kind", Run.Kind.values)
        return queryset.filter(kind__in=kinds) if kinds else queryset

    def get_serializer_class(self):
        if self.action == "create":
            return RunCreateSerializer
        return RunTreeSerializer if self.action == "retrieve" else RunListSerializer

    @extend_schema(request=RunCreateSerializer, responses={202: RunListSerializer}, parameters=[OpenApiParameter(
        "Idempotency-Key", str, OpenApiParameter.HEADER,
        description="Retries with the same key and body within 24 h return the first run (header "
                    "Idempotent-Replayed: true); the same key with another body is a 409.")])
    def create(self, request, *args, **kwargs):
        data = RunCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        run_request = dict(
            workflow_slug=fields["workflow"], input=fields["input"], metadata=run_metadata(fields, request.auth),
            api_key_id=request.auth.id if isinstance(request.auth, KeyInfo) else None,
            budget_usd=float(fields["budget_usd"]) if fields.get("budget_usd") is not None else None,
            deadline_s=fields.get("deadline_s"))
        key = request.headers.get("Idempotency-Key")
        replayed = False
        try:
            if key is None:
                run = start_run(**run_request)
            elif not valid_idempotency_key(key):
                return Response({"Idempotency-Key": ["Use 1 to 255 printable ASCII characters, no spaces."]},
                                status=status.HTTP_400_BAD_REQUEST)
            else:
                owner = f"key:{request.auth.id}" if isinstance(request.auth, KeyInfo) else f"user:{request.user.pk}"
                run, replayed = start_run_once(owner=owner, idempotency_key=key, **run_request)
        except WorkflowNotFound as exc:
            return Response({"workflow": [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
        except IdempotencyConflict as exc:
            return Response({"detail": str(exc), "code": exc.code}, status=status.HTTP_409_CONFLICT)
        if replayed:
            run.refresh_from_db()  # the first attempt's run, as it stands now
        body = RunListSerializer(run).data  # as created (queued): the runner may already have moved on
        return Response({**body, "url": f"/api/runs/{run.pk}/"}, status=status.HTTP_202_ACCEPTED,
                        headers={"Idempotent-Replayed": "true"} if replayed else None)

    @extend_schema(request=None, responses={200: RunListSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        run = self.get_object()
        if not cancel_run(run.pk):
            return Response({"detail": f"The run already ended ({run.status})."}, status=status.HTTP_409_CONFLICT)
        run.refresh_from_db()
        return Response(RunListSerializer(run).data)
