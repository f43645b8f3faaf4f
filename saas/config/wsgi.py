"""WSGI entry point (gunicorn) for the ReadRoom web process."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.config.settings.local")

application = get_wsgi_application()
