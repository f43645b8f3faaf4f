from django.db import migrations, models
from django.db.models import F


def completions_before_this_were_announced(apps, schema_editor):
    # Rows from before the outbox were sent when they were made: the sweep must not send them again.
    StudyCompletion = apps.get_model("studies", "StudyCompletion")
    StudyCompletion.objects.using(schema_editor.connection.alias).update(announced_at=F("completed_at"))


class Migration(migrations.Migration):
    dependencies = [("studies", "0006_upload_finishing")]

    operations = [
        migrations.AddField(
            model_name="studycompletion",
            name="announced_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(completions_before_this_were_announced, migrations.RunPython.noop),
    ]
