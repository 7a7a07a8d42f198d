"""The audit trail is append-only through the ORM, and `verify_audit` finds the first broken link."""
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from orchestration import audit
from orchestration.models import AuditEvent
from orchestration.models.audit import AppendOnlyError


@pytest.fixture
def trail(db):
    return [audit.record(actor="user:admin", action=f"thing.{n}", subject=f"thing:{n}", data={"n": n})
            for n in range(4)]


def test_events_cannot_be_updated_or_deleted_through_the_orm(trail):
    first = trail[0]
    first.action = "rewritten"
    with pytest.raises(AppendOnlyError):
        first.save()
    with pytest.raises(AppendOnlyError):
        first.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=first.pk).update(action="rewritten")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.get(pk=first.pk).action == "thing.0"


def test_verify_audit_reports_an_intact_chain(trail, capsys):
    call_command("verify_audit")
    assert "audit chain intact: 4 events" in capsys.readouterr().out


def test_verify_audit_names_the_first_event_someone_changed_with_raw_sql(trail):
    with connection.cursor() as cursor:  # around the ORM: what a database user could do
        cursor.execute("UPDATE orchestration_auditevent SET data = %s WHERE id = %s", ['{"n": 99}', trail[2].pk])
    with pytest.raises(CommandError, match=f"broken at event {trail[2].pk} "):
        call_command("verify_audit")


def test_verify_audit_notices_a_deleted_event(trail):
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM orchestration_auditevent WHERE id = %s", [trail[1].pk])
    with pytest.raises(CommandError, match=f"broken at event {trail[2].pk} "):
        call_command("verify_audit")


def test_configuration_entries_share_the_chain_with_the_others(trail, capsys):
    from orchestration.models import Provider

    Provider.objects.create(name="acme", kind=Provider.Kind.MOCK)  # recorded by config_audit
    after = audit.record(actor="user:admin", action="thing.after", subject="thing:after")
    config_entry = AuditEvent.objects.get(action="config.provider.created", subject="provider:acme")
    assert trail[-1].pk < config_entry.pk < after.pk and config_entry.prev_hash == trail[-1].hash
    call_command("verify_audit")
    assert f"audit chain intact: {len(trail) + 2} events" in capsys.readouterr().out
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM orchestration_auditevent WHERE id = %s", [config_entry.pk])
    with pytest.raises(CommandError, match=f"broken at event {after.pk} "):
        call_command("verify_audit")
