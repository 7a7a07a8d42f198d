from django.core.management.base import BaseCommand, CommandError

from orchestration.models import APIKey
from orchestration.models.keys import DEFAULT_SCOPES, SCOPES


class Command(BaseCommand):
    help = "Create an API key and print it once (only its SHA-256 digest is stored)."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--scope", action="append", dest="scopes",
                            help=f"repeatable; among {', '.join(SCOPES)} (default: {', '.join(DEFAULT_SCOPES)})")
        parser.add_argument("--budget-usd", type=float, default=None)

    def handle(self, *args, name, scopes, budget_usd, **options):
        unknown = sorted(set(scopes or ()) - set(SCOPES))
        if unknown:
            raise CommandError(f"unknown scope {', '.join(unknown)}; choose among {', '.join(SCOPES)}")
        _, raw = APIKey.issue(name, scopes=scopes, budget_usd=budget_usd)
        self.stdout.write(raw)
