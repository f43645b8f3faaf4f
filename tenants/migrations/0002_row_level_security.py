"""Row-level security on the tenants tables (the second wall), and the SQL context functions."""

from django.db import migrations

from tenants.rls import context_functions, enable_rls


class Migration(migrations.Migration):
    dependencies = [("tenants", "0001_initial")]

    operations = [
        context_functions(),
        enable_rls("tenants_membership", extra=(("user_id", "user_id"),)),
        enable_rls("tenants_radiologistcredential", extra=(("radiologist_id", "user_id"),)),
        enable_rls("tenants_apitoken", extra=(("key_hash", "token_hash"),)),
    ]
