"""Rows the batched writer could never store, set aside with the reason (orchestration/recording.py).

Every column is bounded and plain text or a number, so that setting a row aside cannot fail the way
writing it did. The payload is for reading, not for replaying: it is a depth- and size-bounded rendering.
"""
from django.db import models
from django.utils import timezone


class WriterDeadLetter(models.Model):
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    model_label = models.CharField(max_length=100, help_text="orchestration.Run or orchestration.Step.")
    object_id = models.CharField(max_length=64, blank=True, help_text="The run's (or step's) id.")
    # Not a foreign key: the key may have been deleted, and the dead letter must still be storable.
    api_key_id = models.BigIntegerField(null=True, blank=True)
    cost_usd = models.DecimalField("cost (USD)", max_digits=14, decimal_places=8, default=0,
                                   help_text="Settled on the API key all the same.")
    reason = models.TextField(help_text="The exception that kept the row out, type and message.")
    payload = models.TextField(help_text="A bounded rendering of the row (and a run's steps).")

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "writer dead letter"

    def __str__(self) -> str:
        return f"{self.model_label} {self.object_id}: {self.reason[:80]}"
