"""The control room's pages: server-rendered shells that small scripts keep live over /ws/dashboard/."""
from django.contrib.admin.views.decorators import staff_member_required
from django.db.models import Count
from django.http import HttpResponseBadRequest
from django.shortcuts import render
from django.urls import reverse

from dashboard.run_filters import InvalidCursor, RunFilterForm, filtered_runs, page_of
from dashboard.snapshots import model_list, run_row
from observability import model_stats
from observability.metrics_window import local_window
from orchestration.calibration.selectors import calibration_overview
from orchestration.models import ConfidenceLabel, Run


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
    reviewed = reviewed_answers()
    for model in model_list():
        rows.append({**model, "stats": {window: stats[window].get(model["alias"]) for window in stats},
                     "history": local_window.circuit_history(model["alias"]),
                     "calibration": calibration_card(calibration.get(model["alias"]), model["alias"], reviewed),
                     "admin_url": reverse("admin:orchestration_llmmodel_change", args=[model["admin_id"]])})
    # Only what the diagrams draw goes to the script; the figures in words are rendered by the template.
    diagrams = {row["alias"]: row["calibration"]["bins"] for row in rows if row["calibration"]["calibrated"]}
    return render(request, "dashboard/models.html", {"models": rows, "windows": list(model_stats.WINDOWS),
                                                     "any_history": any(row["history"] for row in rows),
                                                     "reliability_diagrams": diagrams})


def reviewed_answers() -> dict[tuple[str, str], int]:
    """(model alias, method) -> reviewed answers so far: what a model without a calibrator is waiting on."""
    counts = (ConfidenceLabel.objects.filter(source=ConfidenceLabel.Source.REVIEW)
              .values("model_alias", "method").annotate(n=Count("id")))
    return {(row["model_alias"], row["method"]): row["n"] for row in counts}


def calibration_card(overview: dict | None, alias: str, reviewed: dict) -> dict:
    """The models page's calibration figures for one model (overview from calibration_overview)."""
    card = dict(overview or {"method": "prior", "samples": 0, "calibrated": False, "ece_raw": None, "ece": None,
                             "bins": []})
    card["measured"] = card["method"] != "prior"
    # A calibrator fitted on too few labels maps nothing: the model is still waiting for reviewed answers.
    card["reviewed"] = max(card["samples"], reviewed.get((alias, card["method"]), 0))
    return card
