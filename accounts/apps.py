from __future__ import annotations

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Staff sign-in: the second factor (django-otp) in front of the admin."""

    name = "accounts"
    verbose_name = "Staff sign-in"

    def ready(self) -> None:
        from django.contrib import admin
        from django.contrib.auth.signals import user_login_failed

        from accounts import twofactor

        # The admin's own login view, with the code asked beside the password.
        admin.site.login_form = twofactor.TwoFactorAuthenticationForm
        admin.site.login_template = "admin/accounts/login.html"
        user_login_failed.connect(twofactor.count_password_failure, dispatch_uid="cashback-login")
