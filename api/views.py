"""Thin read views over the registry and models' calibration (runs live in api/runs.py)."""
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, viewsets
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from api.input import query_choices
from api.runs import RunsAccess
from api.serializers import ModelSerializer, ProviderSerializer
from orchestration.calibration.selectors import calibration_report
from orchestration.engine.confidence import MEASURED
from orchestration.models import LLMModel, Provider


class ProviderViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Provider.objects.all()
    serializer_class = ProviderSerializer


class ModelViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = LLMModel.objects.select_related("provider")
    serializer_class = ModelSerializer


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
        report = calibration_report(alias, method=methods[0] if methods else None,
                                    scope=request.query_params.get("scope", "")[:200])
        if report is None:
            raise NotFound(f"The model '{alias}' does not exist.")
        return Response(report)
