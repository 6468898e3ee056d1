"""API key authentication: `Authorization: Bearer <api key>`."""

from __future__ import annotations

import hmac
import ipaddress
from datetime import timedelta
from functools import cache
from typing import Any, cast

from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.models import Field
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.settings import api_settings

from gateway import metrics
from gateway.db import hot_cursor
from gateway.logging import MERCHANT_ENVIRON_KEY, merchant_var
from gateway.throttling import FailedAuthThrottle
from merchants.models import ApiKey, Merchant, hash_api_key, parse_api_key

INVALID_KEY = "Invalid or missing API key."
# Writing last-used on every request would cost an UPDATE each; once a minute is enough.
LAST_USED_RESOLUTION = timedelta(seconds=60)
_DUMMY_HASH = "0" * 64
# A prefix no issued key has (issued prefixes are hex), so a malformed key still costs the
# same indexed lookup as a well-formed unknown one.
_NO_PREFIX = "-" * 10
_HEX = frozenset("0123456789abcdef-")


def authenticate_key(raw: str, client_ip: str | None = None) -> ApiKey | None:
    """Return the usable key matching `raw`, or None.

    Unknown, malformed, revoked and expired keys take the same path: one indexed lookup,
    one HMAC and one constant-time comparison, so neither the answer nor its timing tells
    them apart.
    """
    prefix = parse_api_key(raw) or _NO_PREFIX
    if not all(c in _HEX for c in prefix):
        # Issued prefixes are hex; anything else (a NUL upsets PostgreSQL) cannot match.
        prefix = _NO_PREFIX
    key = _key_with_merchant(prefix)
    expected = key.hashed_key if key is not None else _DUMMY_HASH
    matches = hmac.compare_digest(expected, hash_api_key(raw))
    usable = key is not None and key.is_usable
    if not (matches and usable):
        return None
    assert key is not None
    now = timezone.now()
    # Time and address together, at most once a minute: an UPDATE per request (and a row
    # lock that terminals sharing a key from several addresses contend for) is not worth it.
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now, last_used_ip=client_ip)
        key.last_used_at, key.last_used_ip = now, client_ip
    return key


@cache
def _lookup_plan(vendor: str) -> tuple[str, list[tuple[Field[Any, Any], Any, list[Any]]], int]:
    """Return the key-and-merchant SELECT, each column's field and converters, the split."""
    fields: list[tuple[Field[Any, Any], Any, list[Any]]] = []
    columns = []
    for alias, model in (("k", ApiKey), ("m", Merchant)):
        for field in model._meta.concrete_fields:
            col = field.get_col(alias)
            converters = connection.ops.get_db_converters(col) + field.get_db_converters(  # type: ignore[attr-defined]
                connection
            )
            fields.append((field, col, converters))
            columns.append(f"{alias}.{connection.ops.quote_name(field.column)}")
    # Only identifiers from the models' own metadata are interpolated; the prefix is a parameter.
    sql = (
        f"SELECT {', '.join(columns)} FROM {ApiKey._meta.db_table} k"  # noqa: S608
        f" JOIN {Merchant._meta.db_table} m ON m.id = k.merchant_id WHERE k.prefix = %s"
    )
    return sql, fields, len(ApiKey._meta.concrete_fields)


def _key_with_merchant(prefix: str) -> ApiKey | None:
    """Return the key with this prefix and its merchant, in one indexed query (or None).

    Hand-written: the ORM spent more CPU building this SELECT than PostgreSQL spent running it.
    """
    sql, fields, split = _lookup_plan(connection.vendor)
    with hot_cursor(connections[DEFAULT_DB_ALIAS]) as cursor:
        cursor.execute(sql, [prefix])
        row = cursor.fetchone()
    if row is None:
        return None
    values = []
    for (_, col, converters), value in zip(fields, row, strict=True):
        for convert in converters:
            value = convert(value, col, connection)
        values.append(value)
    key = ApiKey.from_db(connection.alias, [f.attname for f, *_ in fields[:split]], values[:split])
    key.merchant = Merchant.from_db(
        connection.alias, [f.attname for f, *_ in fields[split:]], values[split:]
    )
    return key


def client_ip(request: Any) -> str | None:
    """Return the caller's address as the throttles see it (NUM_PROXIES), or None.

    Only a valid IP address is returned: a forged X-Forwarded-For must not reach the
    database's inet column and turn a request into a 500.
    """
    remote = request.META.get("REMOTE_ADDR")
    forwarded = request.headers.get("x-forwarded-for")
    candidate = remote
    if api_settings.NUM_PROXIES and forwarded:
        addresses = forwarded.split(",")
        candidate = addresses[-min(api_settings.NUM_PROXIES, len(addresses))].strip()
    try:
        return str(ipaddress.ip_address(candidate or ""))
    except ValueError:
        return None


def merchant_of(request: Request) -> Merchant:
    """Return the merchant a request authenticated as (`request.user`, typed)."""
    return cast(Merchant, request.user)


class ApiKeyAuthentication(BaseAuthentication):
    """Authenticate a merchant by its API key; `request.user` is the Merchant."""

    keyword = b"bearer"

    def authenticate(self, request: Any) -> tuple[Merchant, ApiKey] | None:
        auth = get_authorization_header(request).split()
        if not auth:
            return None
        raw = ""
        if auth[0].lower() == self.keyword and len(auth) == 2:
            try:
                raw = auth[1].decode("ascii")
            except UnicodeDecodeError:
                raw = ""
        failures = FailedAuthThrottle()
        if failures.blocked(request):
            raise exceptions.Throttled(failures.wait())
        # A malformed header goes through the same lookup and HMAC as a wrong key.
        key = authenticate_key(raw, client_ip(request))
        if key is None:
            over_limit = failures.record_failure()
            metrics.API_AUTH_FAILURES.inc()
            if over_limit:  # other failures of this address passed `blocked` at the same time
                raise exceptions.Throttled(failures.wait())
            raise exceptions.AuthenticationFailed(INVALID_KEY)
        # Every later log line of this request names the merchant (gateway.logging).
        merchant_var.set(key.merchant.public_id)
        request.META[MERCHANT_ENVIRON_KEY] = key.merchant.public_id
        return key.merchant, key

    def authenticate_header(self, request: Any) -> str:
        return 'Bearer realm="api"'


class IsMerchant(BasePermission):
    """Allow requests with a valid key of an active merchant."""

    message = "This merchant is disabled."

    def has_permission(self, request: Any, view: Any) -> bool:
        if not isinstance(request.auth, ApiKey):
            metrics.API_AUTH_FAILURES.inc()
            raise exceptions.NotAuthenticated(INVALID_KEY)
        return bool(request.user.is_active)


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """Describe the API key as an HTTP bearer scheme in the OpenAPI schema."""

    target_class = "merchants.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return build_bearer_security_scheme_object(
            header_name="Authorization", token_prefix="Bearer"
        )
