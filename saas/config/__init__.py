"""Project configuration: settings per environment, URLs, the Celery app, WSGI/ASGI."""

from saas.config.celery import app as celery_app

__all__ = ["celery_app"]
