"""Decisions a confidence gate escalated to a person."""
import uuid

from django.conf import settings
from django.db import models


class ReviewItem(models.Model):
    class Reason(models.TextChoices):
        LOW_CONFIDENCE = "low_confidence"
        POLICY = "policy"
        DISAGREEMENT = "disagreement"
        COST = "cost"

    class Status(models.TextChoices):
        PENDING = "pending"
        CLAIMED = "claimed"
        APPROVED = "approved"
        EDITED = "edited"
        REJECTED = "rejected"
        EXPIRED = "expired"

    class DefaultAction(models.TextChoices):
        APPROVE = "approve", "approve the best candidate"
        REJECT = "reject"
        ESCALATE = "escalate"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    run = models.ForeignKey("orchestration.Run", on_delete=models.CASCADE, related_name="reviews")
    step = models.ForeignKey("orchestration.Step", null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="reviews")
    node_id = models.CharField(max_length=100, blank=True)
    # The gate's step key in its run: decisions are handed back to the engine keyed by it.
    step_key = models.CharField(max_length=255, blank=True)
    reason = models.CharField(max_length=24, choices=Reason.choices, default=Reason.LOW_CONFIDENCE)
    request = models.JSONField(default=dict, blank=True)
    # [{"model": alias, "output": text, "confidence": float, "cost_usd": float}]
    candidates = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    assignee = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="claimed_reviews")
    claimed_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="decided_reviews")
    decided_by_key = models.ForeignKey("orchestration.APIKey", null=True, blank=True, on_delete=models.SET_NULL,
                                       related_name="decided_reviews")
    decided_at = models.DateTimeField(null=True, blank=True)
    chosen_index = models.PositiveIntegerField(null=True, blank=True)
    edited_output = models.TextField(blank=True)
    comment = models.TextField(blank=True)
    category = models.CharField(max_length=64, blank=True)
    # What expiry does when nobody decided by due_at.
    default_action = models.CharField(max_length=16, choices=DefaultAction.choices, default=DefaultAction.APPROVE)
    due_at = models.DateTimeField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        permissions = [("decide_reviewitem", "Can claim and decide review items")]

    def __str__(self) -> str:
        return f"review {self.id} ({self.status})"
