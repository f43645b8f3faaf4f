"""Pages of the studies domain: the browser upload page."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie
from rest_framework.exceptions import APIException

from saas.studies.uploads import upload_tenant


@login_required
@ensure_csrf_cookie  # upload.js sends the cookie's token back as X-CSRFToken on every API call
def upload_page(request):
    # The server decides who may upload; the page only explains a refusal instead of offering the drop zone.
    refusal = ""
    try:
        upload_tenant(request.actor)
    except (APIException, Http404) as error:
        refusal = str(getattr(error, "detail", "")) or "You cannot upload studies in this clinic."
    limits = settings.READROOM_VALIDATION_LIMITS
    return render(
        request,
        "studies/upload.html",
        {"refusal": refusal, "max_file_bytes": limits.max_request_bytes},
    )
