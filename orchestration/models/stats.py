"""Per-model rolling statistics, recomputed by a periodic job; routing reads them."""
from django.db import models


class ModelStat(models.Model):
    model_alias = models.CharField(max_length=100)
    window = models.CharField(max_length=8, choices=[("1h", "1 hour"), ("24h", "24 hours")])
    category = models.CharField(max_length=64, blank=True, help_text="Empty = all categories.")
    calls = models.PositiveIntegerField(default=0)
    success_rate = models.FloatField(null=True, blank=True)
    latency_p50_ms = models.FloatField(null=True, blank=True)
    latency_p95_ms = models.FloatField(null=True, blank=True)
    mean_cost_usd = models.FloatField(null=True, blank=True)
    tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.FloatField(default=0)
    # Reviewers' approvals, plus a judge's score s in [0, 1] counted as s approvals of one review
    # (orchestration/learning.py): hence a float.
    approvals = models.FloatField(default=0)
    reviews = models.PositiveIntegerField(default=0)
    computed_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["model_alias", "window", "category"], name="model_stat_unique")]

    @property
    def approval_rate(self) -> float | None:
        return self.approvals / self.reviews if self.reviews else None
