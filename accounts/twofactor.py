"""Two-factor sign-in for staff (django-otp): TOTP devices, static backup codes, enrolment.

With ADMIN_REQUIRE_2FA on (the production default):
- a staff user who has a device types its code on the admin login page, beside the
  password; a wrong or missing code is a failed sign-in, counted by axes like a wrong
  password (so ten of either lock the account out) and written to the audit log;
- a staff user without a device signs in with the password and is sent to enrolment: a QR
  code and the secret for an authenticator app, confirmed with a code; then ten backup codes
  are shown once;
- any other admin page needs a session verified by a second factor.
"""

from __future__ import annotations

import base64
import logging
from typing import Any, cast
from urllib.parse import quote

import segno
from axes.handlers.proxy import AxesProxyHandler
from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import logout
from django.contrib.auth.models import User
from django.contrib.auth.signals import user_login_failed
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django_otp import devices_for_user, match_token
from django_otp import login as otp_login
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit import services as audit
from gateway import metrics

logger = logging.getLogger(__name__)

BACKUP_CODES = 10
WRONG_CODE = "The authentication code is wrong or missing."
# Paths an unverified staff session may open: signing in and out, and the second factor.
_OPEN_PATHS = ("/admin/login/", "/admin/logout/", "/admin/2fa/", "/admin/jsi18n/")


def required_for(user: Any) -> bool:
    """Whether `user` must pass a second factor for the admin."""
    return bool(settings.ADMIN_REQUIRE_2FA and user.is_authenticated and user.is_staff)


def has_device(user: Any) -> bool:
    return any(True for _ in devices_for_user(user, confirmed=True))


def second_factor_failed(request: HttpRequest, user: Any, where: str) -> None:
    """Count a wrong code like a wrong password (axes), and audit it."""
    request._cashback_second_factor = True  # type: ignore[attr-defined]
    user_login_failed.send(
        sender=__name__, credentials={"username": user.get_username()}, request=request
    )
    metrics.ADMIN_LOGIN_FAILURES.labels(step="second_factor").inc()
    audit.record(user, "2fa_failed", user, {"step": [None, where]})
    logger.warning("second factor refused", extra={"user": user.get_username(), "step": where})


def second_factor_passed(request: HttpRequest, user: Any) -> None:
    """A complete sign-in: forget its failures, as axes does for a password sign-in."""
    if settings.AXES_RESET_ON_SUCCESS:
        AxesProxyHandler.update_request(request)
        handler = AxesProxyHandler.get_implementation()
        handler.reset_user_attempts(request, {"username": user.get_username()})


def count_password_failure(sender: Any, request: Any = None, **kwargs: Any) -> None:
    """Count a failed password sign-in (the second factor counts its own)."""
    if not getattr(request, "_cashback_second_factor", False):
        metrics.ADMIN_LOGIN_FAILURES.labels(step="password").inc()


class TwoFactorAuthenticationForm(AdminAuthenticationForm):
    """The admin login form with the second factor: password and code in one step."""

    otp_token = forms.CharField(
        label="Authentication code",
        required=False,
        max_length=16,
        strip=True,
        help_text="From your authenticator app, or a backup code. Leave empty until you "
        "have set one up.",
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()  # the password; raises (and axes counts) when wrong
        user = self.user_cache
        if user is None or not required_for(user) or not has_device(user):
            return cleaned
        token = cleaned.get("otp_token") or ""
        device = match_token(user, token) if token else None
        if device is None:
            assert self.request is not None
            second_factor_failed(self.request, user, "login")
            raise forms.ValidationError(WRONG_CODE, code="invalid_otp")
        # django-otp stores the device in the session when the login completes.
        user.otp_device = device  # type: ignore[attr-defined]
        audit.record(user, "2fa_verified", user, {"device": [None, device.persistent_id]})
        return cleaned


class CodeForm(forms.Form):
    otp_token = forms.CharField(
        label="Authentication code",
        max_length=16,
        strip=True,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}
        ),
    )


def issue_backup_code(user: Any, device_name: str) -> str:
    """Replace the codes of `user`'s static device `device_name` with one new code; return it."""
    with transaction.atomic():
        device, _ = StaticDevice.objects.get_or_create(user=user, name=device_name)
        if not device.confirmed:
            device.confirmed = True
            device.save(update_fields=["confirmed"])
        device.token_set.all().delete()
        code = StaticToken.random_token()
        device.token_set.create(token=code)
    return code


def _next(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return reverse("admin:index")


def _locked_out(request: HttpRequest) -> bool:
    """After a counted failure: if axes locked the account, end the half-signed-in session."""
    if getattr(request, "axes_locked_out", False):
        logout(request)
        return True
    return False


def _staff_only(request: HttpRequest) -> HttpResponse | None:
    user = request.user
    if not (user.is_authenticated and user.is_active and user.is_staff):
        return HttpResponseRedirect(f"{reverse('admin:login')}?next={quote(request.path)}")
    return None


@never_cache
@csrf_protect
def setup(request: HttpRequest) -> HttpResponse:
    """Enrol a TOTP device: show its QR code and secret, confirm it with a code."""
    refused = _staff_only(request)
    if refused is not None:
        return refused
    user = request.user
    if TOTPDevice.objects.filter(user=user, confirmed=True).exists():
        return HttpResponseRedirect(_next(request))
    device = TOTPDevice.objects.filter(user=user, confirmed=False).first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="authenticator app", confirmed=False)
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if device.verify_token(form.cleaned_data["otp_token"]):
            codes = _enrol(request, device)
            return render(
                request,
                "admin/accounts/backup_codes.html",
                {"title": "Two-factor sign-in is on", "codes": codes, "next": _next(request)},
            )
        second_factor_failed(request, user, "enrolment")
        if _locked_out(request):
            return HttpResponseRedirect(reverse("admin:login"))
        form.add_error("otp_token", WRONG_CODE)
    secret = base64.b32encode(device.bin_key).decode()
    qr = segno.make(device.config_url, error="m")
    return render(
        request,
        "admin/accounts/setup.html",
        {
            "title": "Set up two-factor sign-in",
            "form": form,
            "secret": secret,
            "qr_svg": qr.svg_inline(scale=4, dark="#000", light="#fff"),
            "next": _next(request),
        },
    )


def _enrol(request: HttpRequest, device: TOTPDevice) -> list[str]:
    """Confirm `device`, replace the user's backup codes, verify the session; return them."""
    user = cast(User, request.user)
    with transaction.atomic():
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        backup, _ = StaticDevice.objects.get_or_create(user=user, name="backup codes")
        backup.confirmed = True
        backup.save()
        backup.token_set.all().delete()
        codes = [StaticToken.random_token() for _ in range(BACKUP_CODES)]
        StaticToken.objects.bulk_create([StaticToken(device=backup, token=c) for c in codes])
        audit.record(
            user,
            "2fa_enrolled",
            user,
            {"device": [None, device.persistent_id], "backup_codes": [None, BACKUP_CODES]},
        )
    otp_login(request, device)
    second_factor_passed(request, user)
    return codes


@never_cache
@csrf_protect
def verify(request: HttpRequest) -> HttpResponse:
    """Ask a signed-in staff user with a device for its code (a session from before 2FA)."""
    refused = _staff_only(request)
    if refused is not None:
        return refused
    user = cast(User, request.user)
    if not has_device(user):
        return HttpResponseRedirect(f"{reverse('accounts:setup')}?next={quote(_next(request))}")
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        device = match_token(user, form.cleaned_data["otp_token"])
        if device is not None:
            otp_login(request, device)
            second_factor_passed(request, user)
            audit.record(user, "2fa_verified", user, {"device": [None, device.persistent_id]})
            return HttpResponseRedirect(_next(request))
        second_factor_failed(request, user, "verify")
        if _locked_out(request):
            return HttpResponseRedirect(reverse("admin:login"))
        form.add_error("otp_token", WRONG_CODE)
    return render(
        request,
        "admin/accounts/verify.html",
        {"title": "Two-factor sign-in", "form": form, "next": _next(request)},
    )


class AdminTwoFactorMiddleware:
    """Send staff sessions not verified by a second factor to enrolment or to the code."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if (
            settings.ADMIN_REQUIRE_2FA
            and request.path.startswith("/admin/")
            and not request.path.startswith(_OPEN_PATHS)
        ):
            user = request.user
            if required_for(user) and not user.is_verified():  # type: ignore[union-attr]
                name = "accounts:verify" if has_device(user) else "accounts:setup"
                target = quote(request.get_full_path())
                return HttpResponseRedirect(f"{reverse(name)}?next={target}")
        return self.get_response(request)
