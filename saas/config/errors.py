"""API error shape: every refusal is JSON that names the problem."""

from __future__ import annotations

from django.http import Http404
from rest_framework.exceptions import NotFound
from rest_framework.views import exception_handler


def api_exception_handler(exc, context):
    if isinstance(exc, Http404):
        # One message for "missing" and "another clinic's": nothing to learn from a 404.
        exc = NotFound("Not found.")
    return exception_handler(exc, context)


def validation_message(error) -> str:
    """One line naming each invalid field, for management commands."""
    return "; ".join(f"{field}: {' '.join(messages)}" for field, messages in error.message_dict.items())
