"""Budget reservations of the database backend (orchestration/access/budgets.py; Redis keeps its own).

A row is an amount held against a key's (and its team's) budgets while a model call is in flight, until the
call's cost is committed with its run; `expires_at` releases the holds of a process that died. A settled row
keeps only its actual tokens, for the tokens-per-minute window it counts in, and is purged after that window.
"""
from django.db import models


class BudgetReservation(models.Model):
    id = models.CharField(max_length=64, primary_key=True)
    api_key = models.ForeignKey("orchestration.APIKey", null=True, blank=True, on_delete=models.CASCADE,
                                related_name="+", help_text="None: a team's hold for a run a person started")
    team = models.ForeignKey("orchestration.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    amount_usd = models.DecimalField(max_digits=14, decimal_places=8, default=0)
    tokens = models.PositiveIntegerField(default=0)
    window = models.BigIntegerField(help_text="The minute (epoch seconds // 60) its tokens count in.")
    settled = models.BooleanField(default=False)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        indexes = [models.Index(fields=["api_key", "window"]), models.Index(fields=["team", "window"])]

    def __str__(self) -> str:
        return f"{self.id} ${self.amount_usd}"
