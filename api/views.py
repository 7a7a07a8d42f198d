"""Thin read views over the registry (runs live in api/runs.py)."""
from rest_framework import viewsets

from api.serializers import ModelSerializer, ProviderSerializer
from orchestration.models import LLMModel, Provider


class ProviderViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Provider.objects.all()
    serializer_class = ProviderSerializer


class ModelViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = LLMModel.objects.select_related("provider")
    serializer_class = ModelSerializer
