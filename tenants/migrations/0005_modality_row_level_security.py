"""Row-level security on the modality table."""

from django.db import migrations

from tenants.rls import enable_rls


class Migration(migrations.Migration):
    dependencies = [("tenants", "0004_modality")]

    operations = [enable_rls("tenants_modality")]
