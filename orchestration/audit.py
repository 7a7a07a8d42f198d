"""The append-only audit trail: each event carries the hash of the previous one.

`record()` is the one way to write it. Rows are chained by SHA-256 over the previous
hash and the event's canonical JSON, so editing or deleting any row breaks every
link after it (see `verify_chain`).
"""
from __future__ import annotations

import hashlib
import json

from django.db import connection, transaction
from django.utils import timezone

from orchestration.models import AuditEvent

GENESIS = "0" * 64
AUDIT_LOCK_ID = 0x706F6469756D  # "podium": the advisory lock that orders audit writers on PostgreSQL


def event_digest(prev_hash: str, created_at_iso: str, actor: str, action: str, subject: str, data: dict) -> str:
    canonical = json.dumps([prev_hash, created_at_iso, actor, action, subject, data], sort_keys=True,
                           separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def record(*, actor: str, action: str, subject: str = "", data: dict | None = None) -> AuditEvent:
    """Append one event (who, what, on what, why) to the chain."""
    data = data or {}
    with transaction.atomic():
        # Serialise writers so two events never chain to the same predecessor. Locking the last row is not
        # enough on PostgreSQL: a writer that waited for it would still read it as the last one.
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [AUDIT_LOCK_ID])
        last = AuditEvent.objects.order_by("-id").first()  # SQLite: IMMEDIATE transactions already serialise
        prev_hash = last.hash if last else GENESIS
        created_at = timezone.now()
        digest = event_digest(prev_hash, created_at.isoformat(), actor, action, subject, data)
        return AuditEvent.objects.create(created_at=created_at, actor=actor, action=action, subject=subject,
                                         data=data, prev_hash=prev_hash, hash=digest)


def verify_chain() -> AuditEvent | None:
    """The first event whose link is broken, or None when the whole chain holds."""
    prev_hash = GENESIS
    for event in AuditEvent.objects.order_by("id").iterator():
        expected = event_digest(prev_hash, event.created_at.isoformat(), event.actor, event.action, event.subject,
                                event.data)
        if event.prev_hash != prev_hash or event.hash != expected:
            return event
        prev_hash = event.hash
    return None
