"""Thin read views over the registry and models' calibration (runs live in api/runs.py).

Team scoping (api/scoping.py): a team's key or member sees the models the team may call (none chosen = all)
and the providers of those models; any other model is a 404, as one that does not exist."""
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, viewsets
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from api.input import query_choices
from api.runs import RunsAccess
from api.scoping import allowed_models, may_see_model, visibility
from api.serializers import ModelSerializer, ProviderSerializer
from orchestration.calibration.selectors import calibration_report
from orchestration.engine.confidence import MEASURED
from orchestration.models import LLMModel, Provider, Workflow


def visible_models(request):
    return allowed_models(visibility(request))


class ProviderViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Provider.objects.all()
    serializer_class = ProviderSerializer

    def get_queryset(self):
        if visibility(self.request).team_ids_for_models() is None:  # operators and superusers: every provider
            return Provider.objects.all()
        return Provider.objects.filter(pk__in=visible_models(self.request).values("provider_id"))


class ModelViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = LLMModel.objects.select_related("provider")
    serializer_class = ModelSerializer

    def get_queryset(self):
        return visible_models(self.request)


class CalibrationBinSerializer(serializers.Serializer):
    lo = serializers.FloatField()
    hi = serializers.FloatField()
    predicted = serializers.FloatField(allow_null=True, help_text="mean calibrated confidence in the bin")
    observed = serializers.FloatField(allow_null=True, help_text="share of the bin's answers reviewers approved as is")
    count = serializers.IntegerField()


class CalibrationSerializer(serializers.Serializer):
    model = serializers.CharField()
    method = serializers.CharField(help_text="the raw signal's method: logprobs, self_consistency or verifier")
    scope = serializers.CharField(help_text="'<workflow>/<node id>', or '' for the model as a whole")
    samples = serializers.IntegerField(help_text="labels the calibrator was fitted on")
    labels = serializers.IntegerField(help_text="review labels recorded so far (the next refit uses them)")
    calibrated = serializers.BooleanField(help_text="false until enough labels: the raw signal is used as is")
    mapping = serializers.CharField(allow_null=True, help_text="identity, platt or isotonic")
    ece_raw = serializers.FloatField(allow_null=True, help_text="expected calibration error of the raw signal")
    ece = serializers.FloatField(allow_null=True, help_text="ECE after calibration, measured out of fold")
    brier_raw = serializers.FloatField(allow_null=True)
    brier = serializers.FloatField(allow_null=True)
    bins = CalibrationBinSerializer(many=True)
    bins_raw = CalibrationBinSerializer(many=True)
    methods = serializers.ListField(child=serializers.CharField())
    scopes = serializers.ListField(child=serializers.CharField())
    fitted_at = serializers.DateTimeField(allow_null=True)


class ModelCalibration(APIView):
    """GET /api/models/{alias}/calibration/: how well the model's confidence predicts that its answers are right."""

    permission_classes = [RunsAccess]

    @extend_schema(parameters=[
        OpenApiParameter("method", str, description="logprobs, self_consistency or verifier; default: the model's own"),
        OpenApiParameter("scope", str, description="a workflow step, '<workflow>/<node id>'; default: all its steps"),
    ], responses=CalibrationSerializer)
    def get(self, request, alias: str):
        methods = query_choices(request, "method", MEASURED)
        scope = request.query_params.get("scope", "")[:200]
        view = visibility(request)
        seen = set(view.filter(Workflow.objects.all(), "team", shared=True).values_list("slug", flat=True))
        report = None
        if may_see_model(view, alias) and (not scope or scope.split("/", 1)[0] in seen):
            report = calibration_report(alias, method=methods[0] if methods else None, scope=scope)
        if report is None:  # a model (or workflow step) the caller may not see reads as one that does not exist
            raise NotFound(f"The model '{alias}' does not exist.")
        # Steps of workflows the caller does not see are not listed (their names would leak).
        return Response({**report, "scopes": [s for s in report["scopes"] if not s or s.split("/", 1)[0] in seen]})
