"""Saving workflows: specs are validated, and a changed spec becomes a new immutable version."""
from __future__ import annotations

from django.db import transaction
from django.db.models import Max

from orchestration import audit
from orchestration.engine.spec import compile_spec
from orchestration.models import LLMModel, RouteAlias, Workflow, WorkflowVersion


def known_targets() -> set[str]:
    """Every alias a spec may name: models and route aliases, enabled or not (a disabled one can come back)."""
    return set(LLMModel.objects.values_list("alias", flat=True)) | set(RouteAlias.objects.values_list("name", flat=True))


def validate_workflow_spec(spec) -> dict:
    """The normalised spec, or SpecInvalid whose `errors` name each bad field's path."""
    return compile_spec(spec, known_targets=known_targets())


KEEP = object()  # save_workflow(team_id=KEEP): leave the workflow's team as it is


def save_workflow(*, slug: str, spec=None, description: str | None = None, enabled: bool | None = None,
                  actor: str = "system", team_id=KEEP) -> tuple[Workflow, WorkflowVersion | None, bool]:
    """Create or update a workflow; returns (workflow, its current version, whether a version was added).

    A spec equal to the current version's adds nothing; any other spec is validated first and stored
    as the next version. Runs keep the version they started with. `team_id` (None = shared with every
    team) is set on creation, and changed on update unless KEEP.
    """
    if spec is not None:
        validate_workflow_spec(spec)
    with transaction.atomic():
        workflow, created = Workflow.objects.select_for_update().get_or_create(
            slug=slug, defaults={"description": description or "", "enabled": True if enabled is None else enabled,
                                 "team_id": None if team_id is KEEP else team_id})
        changed = []
        if not created:
            if team_id is not KEEP and team_id != workflow.team_id:
                workflow.team_id, changed = team_id, changed + ["team"]
            if description is not None and description != workflow.description:
                workflow.description, changed = description, changed + ["description"]
            if enabled is not None and enabled != workflow.enabled:
                workflow.enabled, changed = enabled, changed + ["enabled"]
            if changed:
                workflow.save(update_fields=changed)
        current = workflow.current_version
        if spec is None or (current is not None and current.spec == spec):
            return workflow, current, False
        number = (workflow.versions.aggregate(top=Max("number"))["top"] or 0) + 1
        version = WorkflowVersion.objects.create(workflow=workflow, number=number, spec=spec)
        data = {"version": number}
        if workflow.team_id is not None:
            data["team"] = workflow.team_id  # a team's workflow: its admins read the entry (GET /api/audit/)
        audit.record(actor=actor, action="workflow.version_created", subject=f"workflow:{slug}", data=data)
    return workflow, version, True
