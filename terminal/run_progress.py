"""`podium_run`: run a workflow from a terminal, show its steps as they start and finish, exit with its outcome.

The run executes where this installation executes runs (the in-process runner, or Celery
workers), or on another Podium through its REST API with `--url`. Progress comes from the
run's step rows (written as each step starts and finishes); in-process, every live event of
the run wakes the display at once, otherwise it polls a few times a second.

Progress goes to stderr and the run's output to stdout, so `podium_run … > answer.txt` keeps
only the answer. Exit codes (EXIT_CODES) tell scripts what happened.
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass

from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from orchestration import live
from orchestration.models import ReviewItem, Run, Step
from orchestration.reviews.selectors import OPEN_STATUSES
from orchestration.runs.actions import WorkflowNotFound, cancel_run, start_run
from orchestration.runs.selectors import run_tree
from podium.client import PodiumError
from terminal.top_state import epoch_seconds
from terminal.top_view import ms, usd

EXIT_CODES = {"succeeded": 0, "failed": 1, "cancelled": 1, "budget_exceeded": 3, "deadline_exceeded": 4,
              "awaiting_review": 5}
EXIT_TIMEOUT = 6  # still going when --timeout passed; the run goes on
EXIT_USAGE = 2  # unknown workflow, unreadable input, refused request
SETTLED = frozenset(EXIT_CODES)
OUTCOME = {
    "failed": "the run failed", "cancelled": "the run was cancelled",
    "budget_exceeded": "the run stopped: its budget would have been exceeded",
    "deadline_exceeded": "the run stopped: its deadline passed",
}


def read_input(value: str, stdin=None) -> str:
    """TEXT as given, `@path` for a file's contents, `-` for standard input (`@@…` is a literal `@…`)."""
    if value == "-":
        return (stdin or sys.stdin).read()
    if value.startswith("@@"):
        return value[1:]
    if value.startswith("@"):
        with open(value[1:], encoding="utf-8") as handle:
            return handle.read()
    return value


@dataclass
class StepLine:
    id: str
    key: str
    node_type: str
    model: str
    status: str
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    latency_ms: float | None = None
    error: str = ""
    at: float = 0.0  # when it started, or finished once it has: changes are reported in this order

    @classmethod
    def from_row(cls, row: dict) -> "StepLine":
        return cls(id=str(row.get("id")), key=row.get("key") or "", node_type=row.get("node_type") or "call",
                   model=row.get("model_alias") or row.get("model") or "", status=row.get("status") or "",
                   tokens_in=int(row.get("tokens_in") or 0), tokens_out=int(row.get("tokens_out") or 0),
                   cost_usd=float(row.get("cost_usd") or 0), latency_ms=row.get("latency_ms"),
                   error=row.get("error") or "",
                   at=epoch_seconds(row.get("finished_at") or row.get("started_at"), 0.0))

    def describe(self) -> str:
        what = f"{self.key} ({self.node_type}{', ' + self.model if self.model else ''})"
        if self.status == "running":
            return f"started   {what}"
        figures = (f"{self.tokens_in}+{self.tokens_out} tokens, {usd(self.cost_usd)}, {ms(self.latency_ms)}"
                   if self.node_type == "call" else ms(self.latency_ms))
        line = f"{self.status:<9} {what}  {figures}"
        return line + (f"  — {self.error[:200]}" if self.error else "")


class Progress:
    """Turns successive readings of a run's steps into 'started' and 'finished' changes."""

    def __init__(self) -> None:
        self.steps: dict[str, StepLine] = {}
        self.status = ""

    def update(self, status: str, rows: list[dict]) -> list[StepLine]:
        changed = []
        self.status = status
        for row in rows:
            step = StepLine.from_row(row)
            seen = self.steps.get(step.id)
            if seen is None and step.status != "running":  # it started and finished between two readings
                changed.append(StepLine(**{**step.__dict__, "status": "running",
                                           "at": epoch_seconds(row.get("started_at"), 0.0)}))
            if seen is None or seen.status != step.status:
                changed.append(step)
            self.steps[step.id] = step
        return sorted(changed, key=lambda step: step.at)


class LineDisplay:
    """One line per change, for logs and pipes."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def __enter__(self) -> "LineDisplay":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def show(self, progress: Progress, changes: list[StepLine]) -> None:
        if self.stream is None:  # --quiet
            return
        for step in changes:
            self.stream.write(step.describe() + "\n")
        self.stream.flush()


class LiveDisplay:
    """A table of steps redrawn in place on a terminal (stderr), a spinner on the running ones."""

    def __init__(self, console: Console, title: str) -> None:
        self.title = title
        self.live = Live(console=console, auto_refresh=True, refresh_per_second=8, transient=False,
                         redirect_stdout=False, redirect_stderr=False)

    def __enter__(self) -> "LiveDisplay":
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.live.__exit__(*exc)

    def show(self, progress: Progress, changes: list[StepLine]) -> None:
        table = Table(title=f"{self.title} — {progress.status or 'queued'}", title_justify="left")
        for header, justify in (("", "left"), ("step", "left"), ("type", "left"), ("model", "left"),
                                ("tokens in+out", "right"), ("cost", "right"), ("latency", "right")):
            table.add_column(header, justify=justify, no_wrap=True)
        for step in progress.steps.values():
            mark = Spinner("dots") if step.status == "running" else Text(
                {"succeeded": "✓", "failed": "✗"}.get(step.status, "·"),
                style={"succeeded": "green", "failed": "red"}.get(step.status, "dim"))
            table.add_row(mark, Text(step.key), step.node_type, Text(step.model),
                          f"{step.tokens_in}+{step.tokens_out}" if step.node_type == "call" else "",
                          usd(step.cost_usd) if step.node_type == "call" else "",
                          "" if step.status == "running" else ms(step.latency_ms))
        self.live.update(table, refresh=True)


# --- where the run executes ---------------------------------------------------------------------------

class LocalRuns:
    """This installation: start through orchestration.runs, read the rows, wake on in-process events."""

    def __init__(self) -> None:
        from django.conf import settings

        self.public_url = settings.PODIUM["PUBLIC_URL"]
        self._wake = threading.Event()
        self._run_id: str | None = None

    def start(self, workflow: str, input, *, metadata: dict, budget_usd, deadline_s) -> str:
        live.observers.append(self._observe)
        try:
            run = start_run(workflow_slug=workflow, input=input, metadata=metadata, api_key_id=None,
                            budget_usd=budget_usd, deadline_s=deadline_s)
        except WorkflowNotFound as exc:
            raise RunRefused(str(exc)) from None
        self._run_id = str(run.pk)
        return self._run_id

    def _observe(self, event: dict) -> None:
        if self._run_id is None or event.get("run_id") == self._run_id:
            self._wake.set()

    def read(self, run_id: str) -> tuple[dict, list[dict]]:
        run = Run.objects.filter(pk=run_id).values("id", "status", "target", "output", "error", "confidence",
                                                   "tokens_in", "tokens_out", "cost_usd", "latency_ms").get()
        steps = list(Step.objects.filter(run_id=run_id).order_by("started_at", "key").values(
            "id", "key", "node_type", "model_alias", "status", "tokens_in", "tokens_out", "cost_usd",
            "latency_ms", "error", "started_at", "finished_at"))
        return run, steps

    def wait(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def review_link(self, run_id: str) -> str | None:
        from django.urls import reverse

        review = ReviewItem.objects.filter(run_id=run_id, status__in=OPEN_STATUSES).order_by(
            "-created_at").values_list("id", flat=True).first()
        if review is None:
            return None
        return self.public_url + reverse("dashboard:review-detail", args=[review])

    def run_json(self, run_id: str) -> dict:
        return run_tree(run_id)

    def cancel(self, run_id: str) -> None:
        cancel_run(run_id)

    def close(self) -> None:
        if self._observe in live.observers:
            live.observers.remove(self._observe)


class RemoteRuns:
    """Another Podium, through podium.client (REST; the key needs the `runs` scope)."""

    def __init__(self, client) -> None:
        self.client = client
        self.public_url = client.base_url
        self._last: dict = {}

    def start(self, workflow: str, input, *, metadata: dict, budget_usd, deadline_s) -> str:
        try:
            return self.client.submit_run(workflow, input, metadata=metadata, budget_usd=budget_usd,
                                          deadline_s=deadline_s).id
        except PodiumError as exc:
            raise RunRefused(exc.message) from None

    def read(self, run_id: str) -> tuple[dict, list[dict]]:
        self._last = self.client.request("GET", f"/api/runs/{run_id}/")
        return self._last, list(self._last.get("steps") or [])

    def wait(self, seconds: float) -> None:
        time.sleep(seconds)

    def review_link(self, run_id: str) -> str | None:
        try:
            review = self.client.pending_review(run_id)
        except PodiumError:  # listing reviews needs the reviews:decide scope; the run page still helps
            return f"{self.public_url}/runs/{run_id}/"
        return f"{self.public_url}/reviews/{review.id}/" if review else None

    def run_json(self, run_id: str) -> dict:
        return self._last or self.client.request("GET", f"/api/runs/{run_id}/")

    def cancel(self, run_id: str) -> None:
        self.client.request("POST", f"/api/runs/{run_id}/cancel/")

    def close(self) -> None:
        self.client.close()


class RunRefused(Exception):
    """Podium would not start the run (unknown workflow, invalid input, missing scope)."""


class StillRunning(Exception):
    def __init__(self, run: dict):
        super().__init__(f"run {run['id']} is still {run['status']}")
        self.run = run


def follow(runs, run_id: str, display, *, timeout: float | None, poll_s: float = 0.25) -> dict:
    """Show the run's steps until it is final or waits for review; returns its last reading."""
    progress = Progress()
    deadline = None if timeout is None else time.monotonic() + timeout
    with display:
        while True:
            run, steps = runs.read(run_id)
            display.show(progress, progress.update(run["status"], steps))
            if run["status"] in SETTLED:
                return run
            if deadline is not None and time.monotonic() >= deadline:
                raise StillRunning(run)
            runs.wait(poll_s)


def outcome_message(run: dict, review_link: str | None) -> str:
    status = run["status"]
    if status == "awaiting_review":
        return (f"run {run['id']} is waiting for a person to review it: {review_link or '(no open review found)'}\n"
                "It resumes once the review is decided.")
    reason = OUTCOME.get(status, status)
    return f"{reason} (run {run['id']})" + (f": {run['error']}" if run.get("error") else "")


def summary_line(run: dict, elapsed_s: float) -> str:
    return (f"{run['status']} in {elapsed_s:.1f}s — {run.get('tokens_in') or 0}+{run.get('tokens_out') or 0} tokens, "
            f"{usd(float(run.get('cost_usd') or 0))} (run {run['id']})")
