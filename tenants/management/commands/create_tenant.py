"""`create_tenant <slug> --name "<name>" [--ai | --no-ai]`: a clinic with its own Orthanc and S3 bucket (idempotent)."""

import argparse
import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from saas.config.errors import validation_message
from tenants.services import TenantProvisioningError, tenant_ai_set, tenant_create
from tenants.urls_for import tenant_dicomweb_url


class Command(BaseCommand):
    help = "Create a tenant (clinic), start its Orthanc and create its S3 bucket; prints one JSON object."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", required=True)
        parser.add_argument(
            "--ai",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="switch AI analysis on (--ai) or off (--no-ai) for the clinic; unchanged when omitted",
        )

    def handle(self, *args, slug: str, name: str, ai: bool | None = None, **options):
        try:
            tenant, created = tenant_create(slug=slug, name=name)
            if ai is not None:
                tenant_ai_set(tenant=tenant, enabled=ai)
        except ValidationError as error:
            raise CommandError(validation_message(error)) from error
        except TenantProvisioningError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(
            json.dumps(
                {
                    "slug": tenant.slug,
                    "name": tenant.name,
                    "created": created,
                    "dicom_ae_title": tenant.dicom_ae_title,
                    "dicom_host": "127.0.0.1",
                    "dicom_port": tenant.dicom_port,
                    "dicomweb_url": tenant_dicomweb_url(tenant),
                    "orthanc_http_url": tenant.orthanc_http_url,
                    "s3_bucket": tenant.s3_bucket,
                    "ai_enabled": tenant.ai_enabled,
                }
            )
        )
