"""Idempotency keys: a retried submission finds the run its first attempt created."""
from django.db import models


class IdempotencyKey(models.Model):
    """One client's key for one submission. `owner` is who sent it ("key:<id>" or "user:<id>"): two clients may
    use the same key without meeting; `request_hash` is the body's digest, so a key reused for another body is
    told apart from a retry."""

    owner = models.CharField(max_length=64)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    run = models.ForeignKey("orchestration.Run", null=True, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "key"], name="idempotency_key_unique_per_owner")]

    def __str__(self) -> str:
        return f"{self.owner} {self.key}"
