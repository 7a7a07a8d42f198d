"""Workflows in the admin: edit the spec as JSON; a changed spec is saved as a new, immutable version."""
import json

from django import forms
from django.contrib import admin, messages

from orchestration.engine.spec import SpecInvalid
from orchestration.models import Workflow, WorkflowVersion
from orchestration.workflows import save_workflow, validate_workflow_spec

SPEC_HELP = ("The workflow as JSON: {\"root\": {\"type\": \"…\", …}}. Node types: call, route, cascade, sequence, "
             "parallel, refine, supervisor, gate (see docs/workflows.md, \"Workflow specs\"). Saving a different spec adds a "
             "version; runs keep the version they started with.")


class WorkflowForm(forms.ModelForm):
    spec = forms.JSONField(help_text=SPEC_HELP, widget=forms.Textarea(attrs={"rows": 28, "cols": 110,
                                                                             "style": "font-family: monospace"}))

    class Meta:
        model = Workflow
        fields = ["slug", "team", "description", "enabled"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        version = self.instance.current_version if self.instance.pk else None
        if version is not None:
            self.initial["spec"] = version.spec

    def clean_spec(self):
        spec = self.cleaned_data["spec"]
        try:
            validate_workflow_spec(spec)
        except SpecInvalid as exc:
            raise forms.ValidationError(exc.errors) from None  # one line per bad field, each naming its path
        return spec


class WorkflowVersionInline(admin.TabularInline):
    model = WorkflowVersion
    extra = 0
    can_delete = False
    fields = ["number", "created_at", "spec_preview"]
    readonly_fields = fields
    ordering = ["-number"]
    show_change_link = True

    @admin.display(description="spec")
    def spec_preview(self, version):
        text = json.dumps(version.spec)
        return text[:120] + ("…" if len(text) > 120 else "")

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    form = WorkflowForm
    list_display = ["slug", "team", "description", "enabled", "current_version_number", "created_at"]
    list_filter = ["enabled", "team"]
    search_fields = ["slug", "description"]
    inlines = [WorkflowVersionInline]

    @admin.display(description="version")
    def current_version_number(self, workflow):
        version = workflow.current_version
        return version.number if version else None

    def get_readonly_fields(self, request, obj=None):
        return ["slug"] if obj is not None else []  # runs name workflows by slug

    def save_model(self, request, obj, form, change):
        workflow, version, added = save_workflow(
            slug=obj.slug, spec=form.cleaned_data["spec"], description=obj.description, enabled=obj.enabled,
            team_id=obj.team_id, actor=f"user:{request.user.get_username()}")
        obj.pk, obj.created_at = workflow.pk, workflow.created_at
        obj._state.adding = False
        if added:
            messages.info(request, f"Saved the spec as version {version.number}.")


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(admin.ModelAdmin):
    """Read-only: a version never changes."""

    list_display = ["workflow", "number", "created_at"]
    list_filter = ["workflow"]
    readonly_fields = ["workflow", "number", "spec", "created_at"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
