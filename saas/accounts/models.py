"""The platform's user: a person who signs in (clinic staff, radiologist, administrator)."""

from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    # Runs the platform; sees no patient data unless also given a clinic role.
    is_platform_admin = models.BooleanField(default=False)
