"""API keys: shown once, stored as a SHA-256 digest, revocable, scoped."""
import hashlib
import secrets

from django.db import models
from django.utils import timezone

KEY_PREFIX = "pdm_"
SCOPES = ("chat", "runs", "runs:read", "reviews:decide", "events", "events:all")
# `events` (watching live traffic over the websocket) is opt-in: a team's key watches its own team, a key with no
# team (an operator's) watches every team. `events:all` watches every team whatever the key's team: operators only.
DEFAULT_SCOPES = ["chat", "runs", "runs:read"]


def hash_key(raw_key: str) -> str:
    # Keys are 32 random bytes, so a fast digest is enough; there is nothing to brute-force.
    return hashlib.sha256(raw_key.encode()).hexdigest()


class APIKey(models.Model):
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, editable=False, help_text="First characters, to recognise a key.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(default=list, blank=True)
    budget_usd = models.DecimalField("budget (USD)", max_digits=12, decimal_places=4, null=True, blank=True,
                                     help_text="Empty = no budget.")
    spent_usd = models.DecimalField("spent (USD)", max_digits=14, decimal_places=8, default=0, editable=False)
    budget_usd_per_day = models.DecimalField("budget per day (USD)", max_digits=12, decimal_places=4, null=True,
                                             blank=True, help_text="Empty = no daily budget.")
    budget_usd_per_month = models.DecimalField("budget per month (USD)", max_digits=12, decimal_places=4,
                                               null=True, blank=True, help_text="Empty = no monthly budget.")
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    team = models.ForeignKey("orchestration.Team", null=True, blank=True, on_delete=models.PROTECT,
                             related_name="api_keys", help_text="Empty = no team (an operator's key).")
    data_class = models.CharField(max_length=32, blank=True,
                                  help_text="Data class of requests that name none; empty = the team's default.")
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @classmethod
    def issue(cls, name: str, scopes: list[str] | None = None, **fields) -> tuple["APIKey", str]:
        """Create a key; the raw value is returned once and never stored."""
        raw = KEY_PREFIX + secrets.token_urlsafe(32)
        key = cls.objects.create(name=name, prefix=raw[:10], key_hash=hash_key(raw),
                                 scopes=list(DEFAULT_SCOPES if scopes is None else scopes), **fields)
        return key, raw

    def revoke(self) -> None:
        self.revoked_at = timezone.now()
        self.save(update_fields=["revoked_at"])
