"""The registry admins edit: providers and the models they serve."""
import re

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from orchestration.confidence_options import METHODS, check_options

ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
ALIAS_RE = re.compile(r"^[a-z0-9][a-z0-9._:-]*$")
DATA_CLASSES = ("public", "internal", "sensitive", "restricted")


def validate_env_var_name(value: str) -> None:
    if value and not ENV_NAME_RE.match(value):
        raise ValidationError(
            "Enter the NAME of an environment variable (capitals, digits and underscores, "
            "e.g. OPENAI_API_KEY), not the key itself."
        )


def validate_alias(value: str) -> None:
    if value.startswith("workflow/") or not ALIAS_RE.match(value):
        raise ValidationError(
            "Use lower-case letters, digits and . _ : - only (for example 'gpt-fast'); "
            "the prefix 'workflow/' is reserved for workflows."
        )


def validate_string_list(value) -> None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValidationError("Enter a JSON list of strings, e.g. [\"chat\", \"code\"].")


def validate_data_classes(value) -> None:
    validate_string_list(value)
    unknown = sorted(set(value) - set(DATA_CLASSES))
    if unknown:
        raise ValidationError(f"Unknown data class {', '.join(unknown)}; choose from {', '.join(DATA_CLASSES)}.")


class Provider(models.Model):
    """Where models are served from, and how to reach it."""

    class Kind(models.TextChoices):
        OPENAI_COMPATIBLE = "openai_compatible", "OpenAI-compatible"
        ANTHROPIC = "anthropic", "Anthropic"
        OLLAMA = "ollama", "Ollama"
        MOCK = "mock", "Mock (built in)"

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    base_url = models.URLField(blank=True, help_text="Not used by mock providers.")
    api_key_env = models.CharField(
        "API key variable", max_length=128, blank=True, validators=[validate_env_var_name],
        help_text="Name of the environment variable that holds the key. The key itself is never stored.",
    )
    timeout_s = models.FloatField("timeout (s)", default=60.0, validators=[MinValueValidator(0.1)])
    max_concurrency = models.PositiveIntegerField(
        "max concurrent requests", default=64, validators=[MinValueValidator(1)]
    )
    is_local = models.BooleanField("local (on-premises)", default=False,
                                   help_text="Local providers receive prompts without PII redaction.")
    enabled = models.BooleanField(default=True)
    mock_options = models.JSONField(
        default=dict, blank=True,
        help_text='Mock providers only: {"seed": 1, "latency_ms": 300, "latency_jitter_ms": 100, '
                  '"failure_rate": 0.0, "reply": "echo" or a canned text}.',
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.kind != self.Kind.MOCK and not self.base_url:
            raise ValidationError({"base_url": "A base URL is required for this kind of provider."})
        if not isinstance(self.mock_options, dict):
            raise ValidationError({"mock_options": "Enter a JSON object."})
        rate = self.mock_options.get("failure_rate", 0)
        if not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ValidationError({"mock_options": "failure_rate must be a number between 0 and 1."})


class LLMModel(models.Model):
    """One model as Podium exposes it: a public alias over a provider's upstream name."""

    class Tier(models.TextChoices):
        FAST = "fast", "fast"
        MEDIUM = "medium", "medium"
        LARGE = "large", "large"

    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="models")
    upstream_name = models.CharField(max_length=200, help_text="The model name the provider expects.")
    alias = models.CharField(
        max_length=100, unique=True, validators=[validate_alias],
        error_messages={"unique": "Another model already uses this alias; aliases must be unique."},
        help_text="Public name clients send as 'model'.",
    )
    tier = models.CharField(max_length=16, choices=Tier.choices, default=Tier.MEDIUM)
    price_in_per_m = models.DecimalField(
        "USD per 1M input tokens", max_digits=12, decimal_places=6, default=0,
        validators=[MinValueValidator(0, message="A price cannot be negative.")],
    )
    price_out_per_m = models.DecimalField(
        "USD per 1M output tokens", max_digits=12, decimal_places=6, default=0,
        validators=[MinValueValidator(0, message="A price cannot be negative.")],
    )
    quality_prior = models.FloatField(
        default=0.5,
        validators=[MinValueValidator(0, message="Quality is between 0 and 1."),
                    MaxValueValidator(1, message="Quality is between 0 and 1.")],
    )
    context_window = models.PositiveIntegerField(default=8192, validators=[MinValueValidator(1)])
    tags = models.JSONField(default=list, blank=True, validators=[validate_string_list])
    allowed_data_classes = models.JSONField(
        default=list, blank=True, validators=[validate_data_classes],
        help_text=f"Data classes this model may receive, among {', '.join(DATA_CLASSES)}. Empty = public and internal.",
    )
    fallbacks = models.JSONField(
        default=list, blank=True, validators=[validate_string_list],
        help_text="Aliases tried in order when this model fails.",
    )
    cache_ttl_s = models.PositiveIntegerField("cache TTL (s)", default=0, help_text="0 disables the response cache.")
    confidence_method = models.CharField(
        max_length=24, choices=[(m, m) for m in METHODS], default="auto",
        help_text="How answers' confidence is measured: auto = token logprobs where the provider gives them "
                  "(OpenAI-compatible, Ollama), self-consistency for Anthropic when a gate or cascade decides, "
                  "else the prior (shown as not measured).")
    confidence_options = models.JSONField(
        default=dict, blank=True,
        help_text='{"samples": 3, "temperature": 0.7} for self_consistency; {"verifier": "judge-alias"} for verifier.')
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["alias"]
        verbose_name = "model"
        db_table = "orchestration_model"

    def __str__(self) -> str:
        return self.alias

    def clean(self) -> None:
        errors = check_options({**(self.confidence_options if isinstance(self.confidence_options, dict) else {}),
                                "method": self.confidence_method}, "confidence") \
            if isinstance(self.confidence_options, dict) else ["confidence_options: must be a JSON object"]
        if errors:
            raise ValidationError({"confidence_options": errors})


class RouteAlias(models.Model):
    """A public name that picks one of several models by a strategy."""

    class Strategy(models.TextChoices):
        COST = "cost"
        QUALITY = "quality"
        LATENCY = "latency"
        BALANCED = "balanced"
        TIER = "tier"
        CLASSIFIER = "classifier"
        LEARNED = "learned"

    name = models.CharField(max_length=100, unique=True, validators=[validate_alias])
    strategy = models.CharField(max_length=16, choices=Strategy.choices, default=Strategy.BALANCED)
    candidates = models.JSONField(default=list, validators=[validate_string_list],
                                  help_text="Model aliases this route chooses among, in fallback order.")
    options = models.JSONField(default=dict, blank=True, help_text="Strategy options, e.g. {\"tier\": \"fast\"}.")
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "route alias"
        verbose_name_plural = "route aliases"

    def __str__(self) -> str:
        return self.name
