"""Workflows as data: a slug with immutable, versioned JSON specs."""
from django.db import models


class Workflow(models.Model):
    slug = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    enabled = models.BooleanField(default=True)
    team = models.ForeignKey("orchestration.Team", null=True, blank=True, on_delete=models.PROTECT,
                             related_name="workflows", help_text="Empty = shared with every team.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def current_version(self) -> "WorkflowVersion | None":
        return self.versions.order_by("-number").first()


class WorkflowVersion(models.Model):
    """Never updated: editing a workflow adds a version, and runs keep the one they used."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    spec = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["workflow", "-number"]
        constraints = [models.UniqueConstraint(fields=["workflow", "number"], name="workflow_version_unique")]

    def __str__(self) -> str:
        return f"{self.workflow.slug} v{self.number}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ValueError("A workflow version is immutable; save the workflow with a new spec instead.")
        super().save(*args, **kwargs)
