"""Row-level security on the upload tables."""

from django.db import migrations

from tenants.rls import enable_rls


class Migration(migrations.Migration):
    dependencies = [("studies", "0003_uploads")]

    operations = [enable_rls("studies_uploadbatch"), enable_rls("studies_uploadfile")]
