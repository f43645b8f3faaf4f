"""Sign-in and sign-out pages."""

from __future__ import annotations

from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_http_methods, require_POST

from saas.accounts.services import session_login, session_logout


def _safe_next(request) -> str:
    candidate = request.POST.get("next") or request.GET.get("next") or "/"
    if url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return "/"


@never_cache
@csrf_protect
@require_http_methods(["GET", "POST"])
def login_view(request):
    next_url = _safe_next(request)
    if request.method == "GET":
        if request.user.is_authenticated:
            return redirect(next_url)
        return render(request, "accounts/login.html", {"next": next_url})
    username = request.POST.get("username", "").strip()
    password = request.POST.get("password", "")
    errors = {}
    if not username:
        errors["username"] = "Enter your username."
    if not password:
        errors["password"] = "Enter your password."  # noqa: S105 - an error message
    if not errors:
        user, message = session_login(request=request, username=username, password=password)
        if user is not None:
            return redirect(next_url)
        errors["form"] = message
    status = 429 if getattr(request, "axes_locked_out", False) else 400
    return render(
        request, "accounts/login.html", {"next": next_url, "username": username, "errors": errors}, status=status
    )


@require_POST
def logout_view(request):
    session_logout(request=request)
    return redirect("/login/")
