"""The append-only audit trail, each event chained to the previous by hash."""
from django.db import models


class AuditEvent(models.Model):
    created_at = models.DateTimeField(db_index=True)
    actor = models.CharField(max_length=200, help_text="user:<name>, key:<prefix> or system")
    action = models.CharField(max_length=64)
    subject = models.CharField(max_length=200, blank=True)
    data = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64, blank=True)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.subject}"
