"""Second-factor pages, included under /admin/2fa/ by gateway.urls (before admin's own)."""

from __future__ import annotations

from django.urls import path

from accounts import twofactor

app_name = "accounts"
urlpatterns = [
    path("setup/", twofactor.setup, name="setup"),
    path("verify/", twofactor.verify, name="verify"),
]
