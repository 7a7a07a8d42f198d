"""Runs and their steps: the persisted span tree of every request."""
import uuid

from django.db import models


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    AWAITING_REVIEW = "awaiting_review"
    CANCELLED = "cancelled"
    BUDGET_EXCEEDED = "budget_exceeded"
    DEADLINE_EXCEEDED = "deadline_exceeded"


FINAL_RUN_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED,
                                RunStatus.BUDGET_EXCEEDED, RunStatus.DEADLINE_EXCEEDED})


class StepStatus(models.TextChoices):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


class Run(models.Model):
    class Kind(models.TextChoices):
        CHAT = "chat"  # a direct /v1 call to a model or route alias
        WORKFLOW = "workflow"
        EMBEDDINGS = "embeddings"  # a /v1/embeddings call

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.CHAT)
    target = models.CharField(max_length=200, help_text="Model alias, route alias or workflow/<slug>.")
    workflow_version = models.ForeignKey("orchestration.WorkflowVersion", null=True, blank=True,
                                         on_delete=models.PROTECT, related_name="runs")
    api_key = models.ForeignKey("orchestration.APIKey", null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="runs")
    team = models.ForeignKey("orchestration.Team", null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="runs", help_text="The team of the key or user that started it.")
    status = models.CharField(max_length=24, choices=RunStatus.choices, default=RunStatus.QUEUED, db_index=True)
    input = models.JSONField(default=dict, blank=True)
    output = models.TextField(blank=True)
    confidence = models.FloatField(null=True, blank=True)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=0)
    latency_ms = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    budget_usd = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.target} {self.status} ({self.id})"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_RUN_STATUSES


class Step(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")
    # Unique per run: node id, iteration and branch. Lets an interrupted run reuse finished steps.
    key = models.CharField(max_length=255)
    node_id = models.CharField(max_length=100, blank=True)
    node_type = models.CharField(max_length=24, default="call")
    model_alias = models.CharField(max_length=100, blank=True, db_index=True)
    provider = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=StepStatus.choices, default=StepStatus.RUNNING)
    prompt = models.JSONField(default=list, blank=True)
    output = models.TextField(blank=True)
    confidence = models.FloatField(null=True, blank=True,
                                   help_text="Calibrated when a calibrator exists for the method, else the raw signal.")
    confidence_method = models.CharField(max_length=24, blank=True,
                                         help_text="logprobs, self_consistency, verifier or prior (not measured).")
    confidence_raw = models.FloatField(null=True, blank=True)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    tokens_estimated = models.BooleanField(default=False)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=0)
    latency_ms = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)
    attributes = models.JSONField(default=dict, blank=True,
                                  help_text="Markers: cached, redacted, retries, fallback_from, reason…")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["started_at"]
        constraints = [models.UniqueConstraint(fields=["run", "key"], name="step_key_unique_per_run")]
        # finished_at: a daily or monthly budget sums the steps finished in its period (access/budgets.py)
        indexes = [models.Index(fields=["model_alias", "finished_at"]), models.Index(fields=["finished_at"])]

    def __str__(self) -> str:
        return f"{self.key} {self.status}"
