"""`tenants_up`: start the Orthanc of every active tenant (after a reboot or `make down`)."""

from django.core.management.base import BaseCommand, CommandError

from tenants.selectors import tenants_active
from tenants.services import TenantProvisioningError, tenant_provision


class Command(BaseCommand):
    help = "Make sure every active tenant's Orthanc runs and its bucket exists."

    def handle(self, *args, **options):
        failures = []
        for tenant in tenants_active():
            try:
                tenant_provision(tenant=tenant)
                self.stdout.write(
                    f"{tenant.slug}: orthanc {tenant.orthanc_http_url}, AE {tenant.dicom_ae_title}:{tenant.dicom_port}"
                )
            except TenantProvisioningError as error:
                failures.append(str(error))
        if failures:
            raise CommandError("\n".join(failures))
