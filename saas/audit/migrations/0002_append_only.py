"""Make the audit log append-only and tenant-isolated: a trigger, revoked privileges, RLS."""

from django.conf import settings
from django.db import migrations

from tenants.rls import enable_rls

APPEND_ONLY_SQL = """
CREATE OR REPLACE FUNCTION audit_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_auditevent is append-only: % rejected', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
DROP TRIGGER IF EXISTS audit_append_only ON audit_auditevent;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit_auditevent
    FOR EACH ROW EXECUTE FUNCTION audit_reject_change();
DROP TRIGGER IF EXISTS audit_no_truncate ON audit_auditevent;
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION audit_reject_change();
"""


def revoke_changes_from_application_role(apps, schema_editor):
    app_role = settings.DATABASES["default"].get("USER")
    if not app_role or app_role == schema_editor.connection.settings_dict.get("USER"):
        return
    quoted = schema_editor.connection.ops.quote_name(app_role)
    schema_editor.execute(f"REVOKE ALL ON audit_auditevent FROM {quoted}")
    schema_editor.execute(f"GRANT SELECT, INSERT ON audit_auditevent TO {quoted}")


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial"), ("tenants", "0002_row_level_security")]

    operations = [
        migrations.RunSQL(APPEND_ONLY_SQL, reverse_sql=migrations.RunSQL.noop),
        enable_rls("audit_auditevent", platform_rows=True),
        migrations.RunPython(revoke_changes_from_application_role, migrations.RunPython.noop),
    ]
