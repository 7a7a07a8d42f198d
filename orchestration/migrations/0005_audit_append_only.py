"""On PostgreSQL, a trigger refuses UPDATE and DELETE on the audit trail (the ORM refuses them everywhere)."""
from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION podium_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only: % refused on %', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS podium_audit_append_only ON orchestration_auditevent;
CREATE TRIGGER podium_audit_append_only
    BEFORE UPDATE OR DELETE ON orchestration_auditevent
    FOR EACH ROW EXECUTE FUNCTION podium_audit_append_only();
"""
DROP = """
DROP TRIGGER IF EXISTS podium_audit_append_only ON orchestration_auditevent;
DROP FUNCTION IF EXISTS podium_audit_append_only();
"""


def create_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)  # None: the % in the SQL is not a placeholder


def drop_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ("orchestration", "0004_hotpath_run_kind_embeddings"),
    ]

    operations = [
        migrations.RunPython(create_trigger, drop_trigger),
    ]
