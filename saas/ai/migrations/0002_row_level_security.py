"""Row-level security on the AI tables."""

from django.db import migrations

from tenants.rls import enable_rls


class Migration(migrations.Migration):
    dependencies = [("ai", "0001_initial")]

    operations = [enable_rls("ai_analysis"), enable_rls("ai_finding")]
