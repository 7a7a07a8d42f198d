import json
import os
import sys
import time

from django.core.management.base import BaseCommand, CommandError
from rich.console import Console

from podium.client import PodiumClient
from terminal.run_progress import (EXIT_CODES, EXIT_TIMEOUT, EXIT_USAGE, LineDisplay, LiveDisplay, LocalRuns,
                                   RemoteRuns, RunRefused, StillRunning, follow, outcome_message, read_input,
                                   summary_line)


class Command(BaseCommand):
    stealth_options = ("stdin",)
    help = ("Run a workflow and show its steps as they start and finish (model, tokens, cost, latency); print "
            "the output. Exit codes: 0 succeeded, 1 failed or cancelled, 2 refused (unknown workflow, bad "
            "input), 3 budget exceeded, 4 deadline exceeded, 5 waiting for review (the review link is printed), "
            "6 still running when --timeout passed.")

    def add_arguments(self, parser):
        parser.add_argument("workflow", help="the workflow's slug")
        parser.add_argument("--input", required=True, dest="input_value", metavar="TEXT|@file|-",
                            help="the input text, @path to read a file, - to read standard input")
        parser.add_argument("--json", action="store_true", dest="as_json",
                            help="print the final run (with its steps) as JSON instead of the output")
        parser.add_argument("--budget-usd", type=float, default=None, help="stop the run before it costs more")
        parser.add_argument("--deadline-s", type=float, default=None, help="stop the run after this many seconds")
        parser.add_argument("--timeout", type=float, default=None,
                            help="stop waiting after this many seconds (the run goes on; exit 6)")
        parser.add_argument("--metadata", default=None, help="a JSON object stored with the run")
        parser.add_argument("--url", default=None,
                            help="run on the Podium at this URL through its API instead of this installation")
        parser.add_argument("--key", default=os.environ.get("PODIUM_API_KEY"),
                            help="API key with the 'runs' scope, for --url (env PODIUM_API_KEY)")
        parser.add_argument("--quiet", action="store_true", help="no progress display")

    def handle(self, *args, workflow, input_value, as_json, budget_usd, deadline_s, timeout, metadata, url, key,
               quiet, **options):
        try:
            text = read_input(input_value, options.get("stdin"))
            extra = json.loads(metadata) if metadata else {}
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read the input: {exc}", returncode=EXIT_USAGE) from None
        if not isinstance(extra, dict):
            raise CommandError("--metadata must be a JSON object", returncode=EXIT_USAGE)
        if url and not key:
            raise CommandError("--url needs an API key with the 'runs' scope: --key pdm_… or PODIUM_API_KEY",
                               returncode=EXIT_USAGE)
        if url:
            runs = RemoteRuns(PodiumClient(url, key))
        else:
            runs = LocalRuns()
        started = time.monotonic()
        try:
            try:
                run_id = runs.start(workflow, text, metadata={"source": "podium_run", **extra},
                                    budget_usd=budget_usd, deadline_s=deadline_s)
            except RunRefused as exc:
                raise CommandError(str(exc), returncode=EXIT_USAGE) from None
            display = self.display(workflow, quiet)
            try:
                run = follow(runs, run_id, display, timeout=timeout)
            except StillRunning as exc:
                raise CommandError(f"{exc}; still going after {timeout:g}s (it goes on; "
                                   f"{runs.public_url}/runs/{run_id}/)", returncode=EXIT_TIMEOUT) from None
            except KeyboardInterrupt:
                runs.cancel(run_id)
                raise CommandError(f"interrupted: run {run_id} cancelled", returncode=130) from None
            status = run["status"]
            if as_json:
                self.stdout.write(json.dumps(runs.run_json(run_id), indent=2, default=str))
            elif status == "succeeded":
                self.stdout.write(run.get("output") or "")
            if not quiet:
                self.stderr.write(summary_line(run, time.monotonic() - started), style_func=lambda s: s)
            if status != "succeeded":
                link = runs.review_link(run_id) if status == "awaiting_review" else None
                raise CommandError(outcome_message(run, link), returncode=EXIT_CODES.get(status, 1))
        finally:
            runs.close()

    def display(self, workflow: str, quiet: bool):
        if quiet:
            return LineDisplay(None)
        if sys.stderr.isatty():
            return LiveDisplay(Console(stderr=True), f"workflow {workflow}")
        return LineDisplay(self.stderr._out)
