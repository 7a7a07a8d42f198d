import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from orchestration.demo import seed_demo_registry, seed_demo_workflows
from orchestration.models import APIKey
from orchestration.models.keys import DEFAULT_SCOPES


class Command(BaseCommand):
    help = ("Seed the demo registry (mock providers and models), an admin user and a demo API key. "
            "Idempotent; writes the credentials to var/demo-credentials.txt and prints them.")

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username, **options):
        seed_demo_registry()
        seed_demo_workflows()
        User = get_user_model()
        password = secrets.token_urlsafe(12)
        user, created = User.objects.get_or_create(username=username, defaults={"is_staff": True, "is_superuser": True})
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        # A fresh demo key each time; the previous one is revoked (its value was never stored).
        # One by one, not a bulk update: each save moves the registry version, so a running server's key cache
        # forgets the old key at once.
        for old_key in APIKey.objects.filter(name="demo", revoked_at__isnull=True):
            old_key.revoke()
        # The demo key may also watch live events, so `podium_top --url` works against the demo.
        _, raw_key = APIKey.issue("demo", scopes=[*DEFAULT_SCOPES, "events"])
        lines = [f"admin user: {username}", f"password:   {password}", f"API key:    {raw_key}"]
        path = Path(settings.VAR_DIR) / "demo-credentials.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        for line in lines:
            self.stdout.write(line)
