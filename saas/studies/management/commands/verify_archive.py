"""`verify_archive [--tenant <slug>]`: re-read every archived object and report any whose SHA-256 differs."""

from django.core.management.base import BaseCommand, CommandError

from saas.studies.models import Instance
from saas.studies.services import ArchiveError, archive_object_sha256
from tenants.context import tenant_context
from tenants.models import Tenant


class Command(BaseCommand):
    help = "Re-read each archived instance from S3 and compare its SHA-256 with the index; exit 1 on any difference."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="only this tenant")

    def handle(self, *args, tenant: str | None, **options):
        tenants = Tenant.objects.all()
        if tenant:
            tenants = tenants.filter(slug=tenant)
            if not tenants.exists():
                raise CommandError(f"No tenant with slug '{tenant}'.")
        checked, problems = 0, []
        for clinic in tenants:
            with tenant_context(tenant_ids=[clinic.pk]):
                archived = Instance.objects.filter(tenant=clinic, archived_at__isnull=False)
                for instance_id, key, expected in archived.values_list("pk", "s3_key", "sha256").iterator():
                    checked += 1
                    try:
                        actual = archive_object_sha256(tenant=clinic, key=key)
                    except ArchiveError as error:
                        problems.append(f"{clinic.slug} instance {instance_id} {key}: unreadable: {error}")
                        continue
                    if actual != expected:
                        problems.append(
                            f"{clinic.slug} instance {instance_id} {key}: sha256 {actual} != indexed {expected}"
                        )
        for problem in problems:
            self.stderr.write(problem)
        self.stdout.write(f"checked {checked} archived instances, {len(problems)} differ or are missing")
        if problems:
            raise SystemExit(1)
