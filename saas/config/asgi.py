"""ASGI entry point for the ReadRoom web process."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.config.settings.local")

application = get_asgi_application()
