"""The control room's pages: server-rendered shells that small scripts keep live over /ws/dashboard/."""
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpResponseBadRequest
from django.shortcuts import render
from django.urls import reverse

from dashboard.run_filters import InvalidCursor, RunFilterForm, filtered_runs, page_of
from dashboard.snapshots import model_list, run_row
from observability import model_stats
from observability.metrics_window import local_window
from orchestration.calibration.selectors import calibration_overview
from orchestration.models import Run

# A model the overview does not know yet (added a moment ago): nothing measured, nothing to draw.
NOT_MEASURED = {"method": "prior", "measured": False, "samples": 0, "reviewed": 0, "calibrated": False,
                "ece_raw": None, "ece": None, "bins": []}


@staff_member_required
def overview(request):
    return render(request, "dashboard/overview.html")


@staff_member_required
def runs(request):
    form = RunFilterForm(request.GET or None)
    try:
        rows, next_cursor = page_of(filtered_runs(form), request.GET.get("before"))
    except InvalidCursor as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")
    query = request.GET.copy()
    query.pop("before", None)
    return render(request, "dashboard/runs.html", {
        "form": form, "runs": [run_row(r) for r in rows], "next_cursor": next_cursor,
        "first_page": not request.GET.get("before"), "filter_query": query.urlencode(),
        "live_filter": form.live_filter(), "page_size": len(rows)})


@staff_member_required
def run_detail(request, run_id):
    # A run still going may not be recorded yet: the page fills in from the live snapshot.
    run = Run.objects.select_related("api_key").filter(pk=run_id).first()
    return render(request, "dashboard/run_detail.html", {"run": run, "run_id": str(run_id)})


@staff_member_required
def models(request):
    rows = []
    stats = {window: model_stats.model_stats(window) for window in model_stats.WINDOWS}
    calibration = calibration_overview()
    for model in model_list():
        rows.append({**model, "stats": {window: stats[window].get(model["alias"]) for window in stats},
                     "history": local_window.circuit_history(model["alias"]),
                     "calibration": calibration.get(model["alias"]) or NOT_MEASURED,
                     "admin_url": reverse("admin:orchestration_llmmodel_change", args=[model["admin_id"]])})
    # Only what the diagrams draw goes to the script; the figures in words are rendered by the template.
    diagrams = {row["alias"]: row["calibration"]["bins"] for row in rows if row["calibration"]["calibrated"]}
    return render(request, "dashboard/models.html", {"models": rows, "windows": list(model_stats.WINDOWS),
                                                     "any_history": any(row["history"] for row in rows),
                                                     "reliability_diagrams": diagrams})

