"""Row-level security on every table of the study index."""

from django.db import migrations

from tenants.rls import enable_rls


class Migration(migrations.Migration):
    dependencies = [("studies", "0001_initial"), ("tenants", "0002_row_level_security")]

    operations = [
        enable_rls(f"studies_{table}")
        for table in ("patient", "study", "series", "instance", "studycompletion", "synccursor")
    ]
