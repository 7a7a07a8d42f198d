"""REST representations. None of them has a field that could carry a secret."""
from rest_framework import serializers

from orchestration.models import LLMModel, Provider, Run, Step


class ProviderSerializer(serializers.ModelSerializer):
    class Meta:
        model = Provider
        # api_key_env is the variable's name, not the key; the key itself is never read here.
        fields = ["id", "name", "kind", "base_url", "api_key_env", "timeout_s", "max_concurrency", "is_local", "enabled"]


class ModelSerializer(serializers.ModelSerializer):
    provider = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = LLMModel
        fields = ["id", "alias", "provider", "upstream_name", "tier", "price_in_per_m", "price_out_per_m",
                  "quality_prior", "context_window", "tags", "allowed_data_classes", "fallbacks", "confidence_method",
                  "confidence_options", "enabled"]


class StepSerializer(serializers.ModelSerializer):
    class Meta:
        model = Step
        fields = ["id", "parent", "key", "node_id", "node_type", "model_alias", "provider", "status", "prompt",
                  "output", "confidence", "confidence_method", "confidence_raw", "tokens_in", "tokens_out",
                  "tokens_estimated", "cost_usd", "latency_ms", "error", "attributes", "started_at", "finished_at"]


class RunSerializer(serializers.ModelSerializer):
    team = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True,
                                        help_text="null = no team (an operator's run)")

    class Meta:
        model = Run
        fields = ["id", "kind", "target", "status", "team", "output", "confidence", "tokens_in", "tokens_out",
                  "cost_usd", "latency_ms", "error", "metadata", "created_at", "started_at", "finished_at"]


class RunDetailSerializer(RunSerializer):
    steps = StepSerializer(many=True, read_only=True)

    class Meta(RunSerializer.Meta):
        fields = RunSerializer.Meta.fields + ["input", "steps"]
