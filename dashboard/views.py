"""The control room's pages: server-rendered shells that small scripts keep live over /ws/dashboard/.

Every page shows the teams of the person signed in (dashboard/access.py): a superuser every team, with a
`?team=<slug>` selector; a member their teams. Another team's run is a 404, like no run at all.
"""
from django.http import Http404, HttpResponseBadRequest
from django.shortcuts import render
from django.urls import reverse

from dashboard.access import control_room
from dashboard.run_filters import InvalidCursor, RunFilterForm, filtered_runs, page_of
from dashboard.snapshots import model_list, run_row
from observability import model_stats
from observability.metrics_window import local_window
from orchestration.calibration.selectors import calibration_overview
from orchestration.models import Run

# A model the overview does not know yet (added a moment ago): nothing measured, nothing to draw.
NOT_MEASURED = {"method": "prior", "measured": False, "samples": 0, "reviewed": 0, "calibrated": False,
                "ece_raw": None, "ece": None, "bins": []}


@control_room
def overview(request):
    return render(request, "dashboard/overview.html", {"teams": request.teams})


@control_room
def runs(request):
    form = RunFilterForm(request.GET or None, teams=request.teams)
    try:
        rows, next_cursor = page_of(filtered_runs(form, request.teams), request.GET.get("before"))
    except InvalidCursor as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")
    query = request.GET.copy()
    query.pop("before", None)
    return render(request, "dashboard/runs.html", {
        "form": form, "runs": [run_row(r) for r in rows], "next_cursor": next_cursor,
        "first_page": not request.GET.get("before"), "filter_query": query.urlencode(),
        "live_filter": form.live_filter(), "page_size": len(rows), "teams": request.teams})


@control_room
def run_detail(request, run_id):
    run = Run.objects.select_related("api_key").filter(pk=run_id).first()
    if run is None and request.teams.teams is not None:
        # A member sees recorded runs of their teams only; a run not recorded yet is as unknown as another team's.
        raise Http404("No such run.")
    if run is not None and not request.teams.sees(run.team_id):
        raise Http404("No such run.")
    # A superuser's run still going may not be recorded yet: the page fills in from the live snapshot.
    return render(request, "dashboard/run_detail.html", {"run": run, "run_id": str(run_id), "teams": request.teams})


@control_room
def models(request):
    teams = request.teams.teams
    rows = []
    stats = {window: model_stats.model_stats(window, teams=teams) for window in model_stats.WINDOWS}
    calibration = calibration_overview()
    for model in model_list(teams):
        rows.append({**model, "stats": {window: stats[window].get(model["alias"]) for window in stats},
                     "history": local_window.circuit_history(model["alias"]),
                     "calibration": calibration.get(model["alias"]) or NOT_MEASURED,
                     "admin_url": reverse("admin:orchestration_llmmodel_change", args=[model["admin_id"]])
                     if request.user.is_staff else ""})
    # Only what the diagrams draw goes to the script; the figures in words are rendered by the template.
    diagrams = {row["alias"]: row["calibration"]["bins"] for row in rows if row["calibration"]["calibrated"]}
    return render(request, "dashboard/models.html", {"models": rows, "windows": list(model_stats.WINDOWS),
                                                     "any_history": any(row["history"] for row in rows),
                                                     "reliability_diagrams": diagrams, "teams": request.teams})
