"""API key authentication: `Authorization: Bearer <api key>`."""

from __future__ import annotations

import hmac
from datetime import timedelta
from typing import Any

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import BasePermission

from merchants.models import ApiKey, Merchant, hash_api_key, parse_api_key

INVALID_KEY = "Invalid or missing API key."
# Writing last-used on every request would cost an UPDATE each; once a minute is enough.
LAST_USED_RESOLUTION = timedelta(seconds=60)
_DUMMY_HASH = "0" * 64


def authenticate_key(raw: str, client_ip: str | None = None) -> ApiKey | None:
    """Return the usable key matching `raw`, or None.

    Unknown, malformed, revoked and expired keys take the same path: one indexed lookup
    and one constant-time comparison, so timing does not tell them apart.
    """
    prefix = parse_api_key(raw) or ""
    key = (
        ApiKey.objects.select_related("merchant").filter(prefix=prefix).first() if prefix else None
    )
    expected = key.hashed_key if key is not None else _DUMMY_HASH
    matches = hmac.compare_digest(expected, hash_api_key(raw))
    if key is None or not matches or not key.is_usable:
        return None
    now = timezone.now()
    if (
        key.last_used_at is None
        or now - key.last_used_at > LAST_USED_RESOLUTION
        or key.last_used_ip != client_ip
    ):
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now, last_used_ip=client_ip)
        key.last_used_at, key.last_used_ip = now, client_ip
    return key


class ApiKeyAuthentication(BaseAuthentication):
    """Authenticate a merchant by its API key; `request.user` is the Merchant."""

    keyword = b"bearer"

    def authenticate(self, request: Any) -> tuple[Merchant, ApiKey] | None:
        auth = get_authorization_header(request).split()
        if not auth:
            return None
        if auth[0].lower() != self.keyword or len(auth) != 2:
            raise exceptions.AuthenticationFailed(INVALID_KEY)
        try:
            raw = auth[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed(INVALID_KEY) from None
        key = authenticate_key(raw, request.META.get("REMOTE_ADDR"))
        if key is None:
            raise exceptions.AuthenticationFailed(INVALID_KEY)
        return key.merchant, key

    def authenticate_header(self, request: Any) -> str:
        return 'Bearer realm="api"'


class IsMerchant(BasePermission):
    """Allow requests with a valid key of an active merchant."""

    message = "This merchant is disabled."

    def has_permission(self, request: Any, view: Any) -> bool:
        if not isinstance(request.auth, ApiKey):
            raise exceptions.NotAuthenticated(INVALID_KEY)
        return bool(request.user.is_active)
