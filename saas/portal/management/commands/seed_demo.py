"""`seed_demo`: two demo clinics, a person of every role and synthetic studies; prints the logins."""

from django.conf import settings
from django.core.management.base import BaseCommand

from saas.portal.demo import DEMO_PASSWORD, demo_seed


class Command(BaseCommand):
    help = "Create the demo clinics, users of every role and a few synthetic studies (idempotent)."

    def handle(self, *args, **options):
        logins, uploaded = demo_seed()
        self.stdout.write(f"Demo ready at {settings.READROOM_PUBLIC_URL} ({uploaded} new synthetic instances).")
        self.stdout.write(f"Every demo login uses the password: {DEMO_PASSWORD}")
        width = max(len(login.username) for login in logins)
        for login in logins:
            self.stdout.write(f"  {login.username.ljust(width)}  {login.role:<20} {login.clinics}")
