"""Thin read views over the registry and runs."""
from rest_framework import viewsets

from api.serializers import ModelSerializer, ProviderSerializer, RunDetailSerializer, RunSerializer
from orchestration.models import LLMModel, Provider, Run


class ProviderViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Provider.objects.all()
    serializer_class = ProviderSerializer


class ModelViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = LLMModel.objects.select_related("provider")
    serializer_class = ModelSerializer


class RunViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Run.objects.all()

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.action == "retrieve":
            queryset = queryset.prefetch_related("steps")
        status = self.request.query_params.get("status")
        return queryset.filter(status=status) if status else queryset

    def get_serializer_class(self):
        return RunDetailSerializer if self.action == "retrieve" else RunSerializer
