"""`evict_archived --older-than <days> [--tenant <slug>]`: free the hot tier; evicted studies return from S3 on read."""

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from saas.audit.services import AuditWriteFailed
from saas.studies.enums import StudyStatus
from saas.studies.models import Study
from saas.studies.orthanc import OrthancError
from saas.studies.services import study_evict
from tenants.context import tenant_context
from tenants.models import Tenant
from tenants.selectors import tenants_active


class Command(BaseCommand):
    help = "Remove archived studies whose last instance arrived more than N days ago from each tenant's Orthanc."

    def add_arguments(self, parser):
        parser.add_argument("--older-than", type=float, required=True, metavar="DAYS")
        parser.add_argument("--tenant", help="only this tenant")

    def handle(self, *args, older_than: float, tenant: str | None, **options):
        if older_than < 0:
            raise CommandError("--older-than must be zero or more days.")
        tenants = tenants_active()
        if tenant:
            tenants = Tenant.objects.filter(slug=tenant)
            if not tenants.exists():
                raise CommandError(f"No tenant with slug '{tenant}'.")
        cutoff = timezone.now() - timedelta(days=older_than)
        total, failures = 0, []
        for clinic in tenants:
            with tenant_context(tenant_ids=[clinic.pk]):
                candidates = list(
                    Study.objects.filter(
                        tenant=clinic, status=StudyStatus.ARCHIVED, evicted_at__isnull=True, last_received_at__lt=cutoff
                    )
                )
            for study in candidates:
                # One transaction per study: what Orthanc deleted is recorded as evicted at once, whatever
                # happens to the next study (or to this command).
                try:
                    with tenant_context(tenant_ids=[clinic.pk]):
                        total += study_evict(tenant=clinic, study=study)
                except (OrthancError, AuditWriteFailed) as error:
                    failures.append(f"{clinic.slug}: study {study.pk}: {error}")
        self.stdout.write(f"evicted {total} studies")
        if failures:
            raise CommandError("\n".join(failures))
