"""`create_user <username> --role <role> [--tenant <slug>] --password-stdin` (idempotent)."""

import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from saas.config.errors import validation_message
from tenants.enums import Role
from tenants.models import Tenant
from tenants.services import user_provision


class Command(BaseCommand):
    help = (
        "Create or update a person with a role. For clinic roles --tenant is required; for a radiologist "
        "--tenant grants a valid credential for that clinic."
    )

    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=Role.values)
        parser.add_argument("--tenant", help="tenant slug")
        parser.add_argument("--password-stdin", action="store_true", required=True)

    def handle(self, *args, username: str, role: str, tenant: str | None, **options):
        password = (options.get("stdin") or sys.stdin).readline().rstrip("\n")
        found = None
        if tenant:
            found = Tenant.objects.filter(slug=tenant).first()
            if found is None:
                raise CommandError(f"No tenant with slug '{tenant}'.")
        try:
            user = user_provision(username=username, role=role, password=password, tenant=found)
        except ValidationError as error:
            raise CommandError(validation_message(error)) from error
        self.stdout.write(f"{user.username}: {role}" + (f" in {found.slug}" if found else ""))
