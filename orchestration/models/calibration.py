"""What confidence calibration learns from (labels) and what it fitted (calibrators)."""
from django.db import models


class ConfidenceLabel(models.Model):
    """One judged answer: its raw confidence signal and whether it was right.

    A decided review is a label (approved as it is = right; edited or rejected = wrong); the label's source
    keeps people's judgements apart from any other kind, and calibrators are fitted from reviews only.
    """

    class Source(models.TextChoices):
        REVIEW = "review"
        VERIFIER = "verifier"  # a judge model's verdict on sampled traffic: recorded apart, never fitted on

    model_alias = models.CharField(max_length=100)
    scope = models.CharField(max_length=200, blank=True, help_text="<workflow slug>/<node id>; empty for a direct call.")
    method = models.CharField(max_length=24)
    raw = models.FloatField()
    correct = models.BooleanField()
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.REVIEW)
    review = models.OneToOneField("orchestration.ReviewItem", null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="confidence_label")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["model_alias", "method", "source"])]

    def __str__(self) -> str:
        return f"{self.model_alias} {self.method} {self.raw:.2f} {'right' if self.correct else 'wrong'}"


class Calibrator(models.Model):
    """A monotone map from one model's raw signal (one method; one workflow step, or the model as a whole)
    to the probability its answer is right, with the figures that show whether it helps."""

    model_alias = models.CharField(max_length=100)
    scope = models.CharField(max_length=200, blank=True)
    method = models.CharField(max_length=24)
    mapping = models.JSONField(default=dict)
    samples = models.PositiveIntegerField(default=0)
    ece_raw = models.FloatField(null=True)
    ece = models.FloatField(null=True)
    brier_raw = models.FloatField(null=True)
    brier = models.FloatField(null=True)
    bins_raw = models.JSONField(default=list)
    bins = models.JSONField(default=list)
    fitted_at = models.DateTimeField()

    class Meta:
        ordering = ["model_alias", "scope", "method"]
        constraints = [models.UniqueConstraint(fields=["model_alias", "scope", "method"],
                                               name="calibrator_unique_per_model_scope_method")]

    def __str__(self) -> str:
        return f"{self.model_alias} {self.scope or '(all steps)'} {self.method}"
