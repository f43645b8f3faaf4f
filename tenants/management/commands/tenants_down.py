"""`tenants_down`: stop every tenant Orthanc the local driver started."""

from django.core.management.base import BaseCommand

from tenants.orthanc import orthanc_driver


class Command(BaseCommand):
    help = "Stop every tenant Orthanc process started by this deployment's driver."

    def handle(self, *args, **options):
        orthanc_driver().stop_all()
