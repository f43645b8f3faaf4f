"""`cleanup_uploads --older-than <hours> [--tenant <slug>]`: remove abandoned upload batches and their part files."""

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from saas.studies.uploads import upload_batches_cleanup
from tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Remove open upload batches (rows and received bytes) nobody touched for more than N hours. "
        "Batches being finished or processed are never touched; each removal is audited by batch id and counts."
    )

    def add_arguments(self, parser):
        parser.add_argument("--older-than", type=float, required=True, metavar="HOURS")
        parser.add_argument("--tenant", help="only this tenant (slug)")

    def handle(self, *args, older_than: float, tenant: str | None, **options):
        # Zero would take the batch a clinic is sending right now.
        if not older_than > 0:
            raise CommandError("--older-than must be a number of hours above zero.")
        # Suspended clinics too: their abandoned bytes fill the disk all the same.
        tenants = Tenant.objects.order_by("slug")
        if tenant:
            tenants = tenants.filter(slug=tenant)
            if not tenants.exists():
                raise CommandError(f"No tenant with slug '{tenant}'.")
        untouched_since = timezone.now() - timedelta(hours=older_than)
        batches = files = received = 0
        for clinic in tenants:
            cleanup = upload_batches_cleanup(
                tenant=clinic, untouched_since=untouched_since, actor_username="cleanup_uploads"
            )
            if cleanup.batch_ids:
                self.stdout.write(
                    f"{clinic.slug}: removed {len(cleanup.batch_ids)} batches, {cleanup.files} files, "
                    f"{cleanup.bytes_received} bytes received"
                )
            batches, files, received = (
                batches + len(cleanup.batch_ids),
                files + cleanup.files,
                received + cleanup.bytes_received,
            )
        self.stdout.write(f"removed {batches} abandoned upload batches ({files} files, {received} bytes received)")
