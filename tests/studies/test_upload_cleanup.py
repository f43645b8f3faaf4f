"""Abandoned browser uploads: `manage.py cleanup_uploads` and the beat housekeeping remove them, and nothing else."""

import base64
import io
import json
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.core.management import CommandError, call_command
from django.utils import timezone

from saas.audit.enums import AuditEventId
from saas.audit.models import AuditEvent
from saas.studies.enums import UploadStatus
from saas.studies.models import UploadBatch, UploadFile
from saas.studies.upload_tasks import upload_housekeeping_tenant
from saas.studies.uploads import upload_batch_create, upload_chunk_append, upload_file_create, upload_part_path
from tenants.context import tenant_context
from tenants.enums import Role
from tenants.selectors import actor_for_user
from tests.factories import person, tenant_row

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def upload_dir(settings, tmp_path):
    settings.READROOM_UPLOAD_DIR = tmp_path / "uploads"
    return settings.READROOM_UPLOAD_DIR


class Clinic:
    """A clinic with one member of staff, and batches in every state, backdated as the clock would leave them."""

    def __init__(self):
        self.tenant = tenant_row()
        user = person(role=Role.CLINIC_STAFF, tenant=self.tenant)
        self.actor = actor_for_user(user=user)
        self.user_id = user.pk

    def batch(self, files: dict[str, bytes], *, status=UploadStatus.OPEN, hours_ago: float = 0) -> UploadBatch:
        with tenant_context(tenant_ids=[self.tenant.pk], user_id=self.user_id):
            batch = upload_batch_create(actor=self.actor)
            for name, data in files.items():
                upload_file = upload_file_create(actor=self.actor, batch=batch, name=name, size=len(data) + 100)
                upload_chunk_append(
                    actor=self.actor, upload_file=upload_file, offset=0, length=len(data), body=io.BytesIO(data)
                )
            then = timezone.now() - timedelta(hours=hours_ago)
            UploadBatch.objects.filter(pk=batch.pk).update(created_at=then, status=status, progress_at=then)
            UploadFile.objects.filter(batch=batch).update(created_at=then, updated_at=then)
            return UploadBatch.objects.get(pk=batch.pk)

    def touch_one_file(self, batch: UploadBatch, *, hours_ago: float) -> None:
        with tenant_context(tenant_ids=[self.tenant.pk]):
            upload_file = UploadFile.objects.filter(batch=batch).first()
            UploadFile.objects.filter(pk=upload_file.pk).update(updated_at=timezone.now() - timedelta(hours=hours_ago))

    def batch_ids(self) -> set[str]:
        with tenant_context(tenant_ids=[self.tenant.pk]):
            return {str(pk) for pk in UploadBatch.objects.values_list("pk", flat=True)}

    def part_files(self, batch: UploadBatch) -> list[bool]:
        with tenant_context(tenant_ids=[self.tenant.pk]):
            return [upload_part_path(upload_file).exists() for upload_file in UploadFile.objects.filter(batch=batch)]

    def cleanup_events(self) -> list[AuditEvent]:
        with tenant_context(tenant_ids=[self.tenant.pk]):
            return list(
                AuditEvent.objects.filter(
                    tenant_id=self.tenant.pk,
                    event_id=AuditEventId.APPLICATION_ACTIVITY,
                    detail__operation="upload_cleanup",
                )
            )


def test_cleanup_uploads_removes_open_batches_untouched_for_longer_than_asked_and_nothing_else(
    django_capture_on_commit_callbacks,
):
    # given an open batch left 30 hours ago, whose file names carry a patient's name
    clinic = Clinic()
    abandoned = clinic.batch({"CD/DOE^JANE/IM1": b"a" * 300, "CD/DOE^JANE/IM2": b"b" * 200}, hours_ago=30)
    with tenant_context(tenant_ids=[clinic.tenant.pk]):
        abandoned_parts = [upload_part_path(f) for f in UploadFile.objects.filter(batch=abandoned)]
    # and an open batch begun 30 hours ago that took a chunk an hour ago (a clinic resuming the next morning)
    resumed = clinic.batch({"IM1": b"c" * 100}, hours_ago=30)
    clinic.touch_one_file(resumed, hours_ago=1)
    # and a batch a worker is finishing and one processed, both as old
    finishing = clinic.batch({"IM1": b"d" * 100}, status=UploadStatus.FINISHING, hours_ago=30)
    processed = clinic.batch({}, status=UploadStatus.PROCESSED, hours_ago=30)
    # and another clinic's abandoned batch, out of reach of a run for this clinic only
    other = Clinic()
    elsewhere = other.batch({"IM1": b"e" * 100}, hours_ago=30)
    # when the command removes what was untouched for more than 24 hours in this clinic
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("cleanup_uploads", "--older-than", "24", "--tenant", clinic.tenant.slug, stdout=out)
    # then only the abandoned batch is gone, rows and received bytes
    assert clinic.batch_ids() == {str(resumed.pk), str(finishing.pk), str(processed.pk)}
    with tenant_context(tenant_ids=[clinic.tenant.pk]):
        assert UploadFile.objects.filter(batch_id=abandoned.pk).count() == 0
    assert [path.exists() for path in abandoned_parts] == [False, False]
    assert clinic.part_files(resumed) == [True] and clinic.part_files(finishing) == [True]
    assert other.batch_ids() == {str(elsewhere.pk)} and other.part_files(elsewhere) == [True]
    # and the removal is audited by batch id and counts, without a file name
    [event] = clinic.cleanup_events()
    assert event.action == "D" and event.actor_username == "cleanup_uploads"
    assert event.detail["operation"] == "upload_cleanup"
    assert event.detail["batches"] == [str(abandoned.pk)]
    assert (event.detail["files"], event.detail["bytes_received"]) == (2, 500)
    assert "DOE" not in json.dumps(event.detail)
    assert other.cleanup_events() == []
    # and the operator reads what was done
    assert f"{clinic.tenant.slug}: removed 1 batches, 2 files, 500 bytes received" in out.getvalue()
    assert "removed 1 abandoned upload batches (2 files, 500 bytes received)" in out.getvalue()


@pytest.mark.parametrize("hours", ["0", "-5"])
def test_cleanup_uploads_refuses_an_age_that_would_take_uploads_in_progress(hours):
    clinic = Clinic()
    batch = clinic.batch({"IM1": b"a" * 100})
    with pytest.raises(CommandError, match="--older-than must be a number of hours above zero"):
        call_command("cleanup_uploads", "--older-than", hours)
    assert clinic.batch_ids() == {str(batch.pk)} and clinic.part_files(batch) == [True]
    assert clinic.cleanup_events() == []


def test_cleanup_uploads_names_an_unknown_tenant():
    with pytest.raises(CommandError, match="No tenant with slug 'no-such-clinic'"):
        call_command("cleanup_uploads", "--older-than", "24", "--tenant", "no-such-clinic")


def test_beat_housekeeping_removes_a_day_old_batch_and_queues_a_stalled_finish_again(
    django_capture_on_commit_callbacks,
):
    # given an open batch untouched for 25 hours, one for 23, a finish with no sign of life for 15 minutes and
    # one that progressed a minute ago
    clinic = Clinic()
    abandoned = clinic.batch({"IM1": b"a" * 100}, hours_ago=25)
    recent = clinic.batch({"IM1": b"b" * 100}, hours_ago=23)
    stalled = clinic.batch({"IM1": b"c" * 100}, status=UploadStatus.FINISHING, hours_ago=0.25)
    alive = clinic.batch({"IM1": b"d" * 100}, status=UploadStatus.FINISHING, hours_ago=1 / 60)
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    queued_before = broker.lrange("django", 0, -1)
    # when beat's housekeeping runs for the clinic
    with django_capture_on_commit_callbacks(execute=True):
        upload_housekeeping_tenant(tenant_id=clinic.tenant.pk)
    # then the day-old open batch is gone and the others stay
    assert clinic.batch_ids() == {str(recent.pk), str(stalled.pk), str(alive.pk)}
    assert clinic.part_files(recent) == [True]
    # and the stalled finish is queued again, once, and marked alive so the next sweep does not queue it again
    sent = [json.loads(raw) for raw in broker.lrange("django", 0, -1) if raw not in queued_before]
    try:
        assert [(message["headers"]["task"], json.loads(base64.b64decode(message["body"]))[1]) for message in sent] == [
            ("studies.upload_finish", {"tenant_id": clinic.tenant.pk, "batch_id": str(stalled.pk)})
        ]
    finally:
        for raw in broker.lrange("django", 0, -1):
            if raw not in queued_before:
                broker.lrem("django", 1, raw)
    with tenant_context(tenant_ids=[clinic.tenant.pk]):
        refreshed = UploadBatch.objects.get(pk=stalled.pk)
        assert refreshed.status == UploadStatus.FINISHING
        assert timezone.now() - refreshed.progress_at < timedelta(minutes=1)
        assert UploadBatch.objects.get(pk=alive.pk).progress_at == alive.progress_at
    assert str(abandoned.pk) in clinic.cleanup_events()[0].detail["batches"]
