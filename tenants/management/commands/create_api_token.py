"""`create_api_token --tenant <slug> --scopes studies:write,studies:read`: prints the token once."""

from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from saas.config.errors import validation_message
from tenants.models import Tenant
from tenants.services import api_token_create


class Command(BaseCommand):
    help = "Create an API token for one tenant with named scopes; the secret is printed once and never stored."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="tenant slug")
        parser.add_argument("--scopes", required=True, help="comma-separated, e.g. studies:write,studies:read")
        parser.add_argument("--name", default="cli token")
        parser.add_argument("--expires-in-days", type=int, default=90)

    def handle(self, *args, tenant: str, scopes: str, name: str, expires_in_days: int, **options):
        found = Tenant.objects.filter(slug=tenant).first()
        if found is None:
            raise CommandError(f"No tenant with slug '{tenant}'.")
        try:
            _, raw = api_token_create(
                tenant=found,
                name=name,
                scopes=[scope.strip() for scope in scopes.split(",") if scope.strip()],
                expires_in=timedelta(days=expires_in_days),
            )
        except ValidationError as error:
            raise CommandError(validation_message(error)) from error
        self.stdout.write(raw)
