from django.core.management.base import BaseCommand, CommandError

from orchestration.audit import verify_chain
from orchestration.models import AuditEvent


class Command(BaseCommand):
    help = "Verify the audit trail's hash chain; report the first broken link and exit non-zero if there is one."

    def handle(self, *args, **options):
        broken = verify_chain()
        if broken is not None:
            raise CommandError(
                f"audit chain broken at event {broken.id} ({broken.created_at:%Y-%m-%d %H:%M:%S} {broken.actor} "
                f"{broken.action} {broken.subject}): its hash does not match its content or its predecessor; "
                "it or an earlier event was changed or deleted")
        self.stdout.write(f"audit chain intact: {AuditEvent.objects.count()} events")
