"""/api/runs/: start a workflow run (202), read runs with their step tree, cancel.

API keys need the `runs` scope to start or cancel (`runs` or `runs:read` to read) and see only
the runs they started (and, for a team's key, only in its team). Sessions see the runs of their teams
(api/scoping.py: superusers all, staff also the runs with no team); viewers read, reviewers and admins of
the run's team may also start and cancel. Another team's run is a 404. A start with an `Idempotency-Key`
header is done once per key and body (orchestration/runs/actions.py `start_run_once`).
"""
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from api.input import RejectUnknownFields, query_choices
from api.scoping import Role, team_filter, visibility
from api.serializers import RunDetailSerializer, RunSerializer
from orchestration.access import budgets
from orchestration.access.apikeys import KeyInfo
from orchestration.access.limits import LimitExceeded
from orchestration.models import Run, Team
from orchestration.models.runs import RunStatus
from orchestration.runs.actions import (IdempotencyConflict, WorkflowNotFound, cancel_run, start_run, start_run_once,
                                        valid_idempotency_key)
from orchestration.runs.selectors import step_tree


class RunsAccess(permissions.BasePermission):
    message = "API keys need the 'runs' scope (or 'runs:read' to read); sessions must be staff or team members."

    def has_permission(self, request, view):
        if isinstance(request.auth, KeyInfo):
            if request.method in permissions.SAFE_METHODS:
                return request.auth.allows("runs") or request.auth.allows("runs:read")
            return request.auth.allows("runs")
        return bool(request.user and request.user.is_authenticated and visibility(request).any_access)


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
    team = serializers.SlugField(required=False, help_text=(
        "Sessions: the team the run belongs to (one you are a reviewer or admin of; default: your only team). "
        "An API key's runs belong to its team."))


class TeamChoiceError(Exception):
    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code, self.message = status_code, message


def run_team(request, slug: str | None) -> int | None:
    """The team a run started by this caller belongs to: the key's, else the one named (or the person's only
    team); None = the operator space (team-less keys, superusers and staff naming none)."""
    view = visibility(request)
    if isinstance(request.auth, KeyInfo):
        if slug and (request.auth.team is None or slug != request.auth.team.slug):
            raise TeamChoiceError(400, "An API key starts runs in its own team; leave out 'team'.")
        return request.auth.team_id
    if slug:
        team_id = Team.objects.filter(slug=slug).values_list("id", flat=True).first()
        if team_id is None or not view.sees(team_id):  # one answer for missing and foreign teams
            raise TeamChoiceError(400, f"You are not a member of a team '{slug}'.")
    elif view.everything or (view.operator_space and not view.teams.roles):
        return None
    elif len(view.teams.roles) == 1:
        team_id = next(iter(view.teams.roles))
    else:
        raise TeamChoiceError(400, "You are a member of several teams: name the run's team in 'team'.")
    if not view.has_role(team_id, Role.REVIEWER):
        raise TeamChoiceError(403, "Viewers may read the team's runs; starting one needs the reviewer or admin role.")
    return team_id


def run_metadata(fields: dict, auth, team_id: int | None) -> dict:
    """The run's metadata; its `data_class` (what its steps are held to) is the request's, else the key's or the
    key's team's default, else (a person's run) the run's team's default."""
    metadata = dict(fields.get("metadata") or {})
    if not metadata.get("data_class"):
        if isinstance(auth, KeyInfo):
            default = auth.default_data_class
        else:
            default = Team.objects.filter(pk=team_id).values_list("default_data_class", flat=True).first()
        if default:
            metadata["data_class"] = default
    return metadata


@extend_schema_view(list=extend_schema(parameters=[
    OpenApiParameter("status", str, description="Comma-separated run statuses: " + ", ".join(RunStatus.values)),
    OpenApiParameter("kind", str, description="Comma-separated run kinds: " + ", ".join(Run.Kind.values))]))
class RunViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    permission_classes = [RunsAccess]

    def get_queryset(self):
        queryset = Run.objects.select_related("workflow_version__workflow", "team")
        if isinstance(self.request.auth, KeyInfo):
            queryset = queryset.filter(api_key_id=self.request.auth.id)
        # A key's own runs, in its (current) team: a key moved to another team leaves its old runs behind.
        queryset = team_filter(self.request, visibility(self.request).filter(queryset, "team"))
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
        try:
            team_id = run_team(request, fields.get("team"))
        except TeamChoiceError as exc:
            body = {"team": [exc.message]} if exc.status_code == 400 else {"detail": exc.message}
            return Response(body, status=exc.status_code)
        if not isinstance(request.auth, KeyInfo):  # a key's budgets are checked by its throttle (api/throttling.py)
            try:
                budgets.check_team_open(team_id)
            except LimitExceeded as exc:
                raise exceptions.Throttled(wait=exc.retry_after, detail=exc.message, code=exc.code) from None
        run_request = dict(
            workflow_slug=fields["workflow"], input=fields["input"],
            metadata=run_metadata(fields, request.auth, team_id),
            api_key_id=request.auth.id if isinstance(request.auth, KeyInfo) else None, team_id=team_id,
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
        run = self.get_object()  # another team's run: 404
        if not isinstance(request.auth, KeyInfo) and not visibility(request).has_role(run.team_id, Role.REVIEWER):
            return Response({"detail": "Viewers may read the team's runs; cancelling needs the reviewer or admin role."},
                            status=status.HTTP_403_FORBIDDEN)
        if not cancel_run(run.pk):
            return Response({"detail": f"The run already ended ({run.status})."}, status=status.HTTP_409_CONFLICT)
        run.refresh_from_db()
        return Response(RunListSerializer(run).data)
