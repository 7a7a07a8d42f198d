import json

from django.core.management.base import BaseCommand, CommandError
from rich.console import Console

from terminal.status import build_report, print_report


class Command(BaseCommand):
    help = ("The registry and a health summary. Exits 1 when an enabled provider is unreachable or the "
            "database / Redis is down, 0 otherwise: usable in cron and health checks.")

    def add_arguments(self, parser):
        parser.add_argument("--timeout", type=float, default=3.0, help="seconds per provider check (default 3)")
        parser.add_argument("--json", action="store_true", dest="as_json", help="print the report as JSON")

    def handle(self, *args, timeout, as_json, **options):
        report = build_report(timeout=timeout)
        if as_json:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        else:
            print_report(report, Console(file=self.stdout._out, highlight=False))
        if report.exit_code:
            problems = [f"{p.name} ({p.detail})" for p in report.unreachable]
            problems += [f"{name} {value}" for name, value in report.checks.items() if value != "ok"]
            raise CommandError("unhealthy: " + "; ".join(problems), returncode=report.exit_code)
