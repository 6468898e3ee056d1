"""The WSGI application: the API's short middleware chain and the back office's whole one.

These call `gateway.wsgi.application` itself, as gunicorn does (the suite's test client
takes the same chains: tests/conftest.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import RequestFactory

from gateway import wsgi
from tests.conftest import purchase_body

# What the back office's middleware would add to an API answer: nothing of these may appear.
BACK_OFFICE_HEADERS = {"set-cookie", "vary", "content-security-policy"}


@contextmanager
def _test_transaction_kept() -> Iterator[None]:
    """Keep the test's transaction open across a request, as Django's test client does.

    The handler closes a connection that is not in autocommit when a request starts and ends;
    inside a test's transaction that would roll the test back.
    """
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def serve(environ: dict[str, Any], app: Any = None) -> tuple[int, dict[str, str], list[str], bytes]:
    """Call the application (or `app`); return status, headers (lowercased), Set-Cookie
    lines and body."""
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"], seen["headers"] = status, headers

    with _test_transaction_kept():
        result = (app or wsgi.application)(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            getattr(result, "close", lambda: None)()
    headers = {name.lower(): value for name, value in seen["headers"]}
    cookies = [value for name, value in seen["headers"] if name.lower() == "set-cookie"]
    return int(seen["status"].split()[0]), headers, cookies, body


def test_the_short_chain_is_the_whole_one_without_the_back_office() -> None:
    whole = list(django_settings.MIDDLEWARE)
    assert wsgi.api_handler.middleware == django_settings.API_MIDDLEWARE
    assert wsgi.site_handler.middleware == whole
    # The same middleware, in the same order: the back office's are only left out.
    assert [
        m for m in whole if m in django_settings.API_MIDDLEWARE
    ] == django_settings.API_MIDDLEWARE
    assert set(whole) - set(django_settings.API_MIDDLEWARE) == {
        "whitenoise.middleware.WhiteNoiseMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django_otp.middleware.OTPMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        "accounts.twofactor.AdminTwoFactorMiddleware",
        "gateway.middleware.ContentSecurityPolicyMiddleware",
        "axes.middleware.AxesMiddleware",
    }
    # Each handler runs its own chain's view hooks: CSRF's check is the back office's alone.
    assert _view_hooks(wsgi.api_handler) == []
    assert _view_hooks(wsgi.site_handler) == ["CsrfViewMiddleware"]


def _view_hooks(handler: Any) -> list[str]:
    return [hook.__self__.__class__.__name__ for hook in handler._view_middleware]


def test_the_test_client_takes_the_same_chains(client: Any) -> None:
    """The suite's client (tests/conftest.py) serves each path through its production chain."""
    assert client.get("/healthz").status_code == 200
    assert client.get("/api/schema/").status_code == 200
    chains = client.handler._chains_by_route
    assert set(chains) == {True, False}
    api_hooks, site_hooks = chains[True][1], chains[False][1]  # their view hooks
    assert [h.__self__.__class__.__name__ for h in api_hooks] == []
    assert [h.__self__.__class__.__name__ for h in site_hooks] == ["CsrfViewMiddleware"]


@pytest.mark.parametrize(
    ("path", "chain"),
    [
        ("/api/v1/purchases", "api"),
        ("/api/v1/purchases/A-1", "api"),
        ("/api/v1/balance", "api"),
        ("/new_purchase", "api"),
        ("/healthz", "api"),
        ("/readyz", "api"),
        ("/metrics", "api"),
        ("/admin/", "site"),
        ("/admin/login/", "site"),
        ("/api/docs/", "site"),
        ("/api/schema/", "site"),
        ("/static/backoffice/favicon.svg", "site"),
        ("/", "site"),
    ],
)
def test_each_path_is_served_by_its_chain(monkeypatch: Any, path: str, chain: str) -> None:
    served: list[str] = []
    for name in ("api", "site"):
        monkeypatch.setattr(
            wsgi, f"{name}_handler", lambda environ, start, name=name: served.append(name) or []
        )
    environ = RequestFactory().get(path).environ
    assert wsgi.application(environ, lambda *args: None) == []
    assert served == [chain]


@pytest.mark.django_db
def test_a_purchase_through_the_application_answers_as_through_the_whole_chain(
    shop: Any, upstream: Any
) -> None:
    factory = RequestFactory()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {shop.key}", "HTTP_X_REQUEST_ID": "req-1"}
    request = factory.post(
        "/api/v1/purchases",
        json.dumps(purchase_body(order_id="W-1")),
        content_type="application/json",
        **auth,
    )
    status, headers, cookies, body = serve(request.environ)

    assert status == 201
    answer = json.loads(body)
    assert (answer["order_id"], answer["status"]) == ("W-1", "sent")
    assert headers["x-request-id"] == "req-1"
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == str(len(body))
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["cross-origin-opener-policy"] == "same-origin"
    assert headers["x-frame-options"] == "DENY"
    assert cookies == []
    assert not BACK_OFFICE_HEADERS & set(headers)

    # The whole chain gives the same answer with the same headers.
    request = factory.post(
        "/api/v1/purchases",
        json.dumps(purchase_body(order_id="W-2")),
        content_type="application/json",
        **auth,
    )
    status, whole_headers, whole_cookies, body = serve(request.environ, wsgi.site_handler)
    assert status == 201
    assert set(whole_headers) == set(headers)
    assert whole_cookies == []
    assert set(json.loads(body)) == set(answer)


@pytest.mark.django_db
def test_the_short_chain_still_refuses_what_the_api_refuses(shop: Any) -> None:
    factory = RequestFactory()
    unauthenticated = factory.post("/api/v1/purchases", "{}", content_type="application/json")
    status, headers, _, body = serve(unauthenticated.environ)
    assert status == 401
    assert json.loads(body) == {"detail": "Invalid or missing API key."}
    assert headers["www-authenticate"] == 'Bearer realm="api"'

    too_big = factory.post(
        "/api/v1/purchases",
        b"x" * (django_settings.MAX_REQUEST_BODY_BYTES + 1),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {shop.key}",
    )
    status, _, _, body = serve(too_big.environ)
    assert status == 413
    assert json.loads(body) == {
        "detail": f"Request body is larger than {django_settings.MAX_REQUEST_BODY_BYTES // 1024} KiB."
    }

    unrouted = factory.get("/api/v1/nothing-here", HTTP_AUTHORIZATION=f"Bearer {shop.key}")
    status, _, cookies, body = serve(unrouted.environ)
    assert (status, json.loads(body), cookies) == (404, {"detail": "Not found."}, [])


@pytest.mark.django_db
def test_the_drop_in_endpoint_and_probes_take_the_short_chain() -> None:
    factory = RequestFactory()
    for path in ("/healthz", "/readyz"):
        status, headers, cookies, body = serve(factory.get(path).environ)
        assert status == 200, path
        assert json.loads(body)["status"] == "ok"
        assert (cookies, BACK_OFFICE_HEADERS & set(headers)) == ([], set())
    status, headers, cookies, body = serve(
        factory.post("/new_purchase", {"partner": "nobody"}).environ
    )
    # The drop-in answers as upstream does: 200, with the error in the body.
    assert (status, json.loads(body)) == (
        200,
        {"result": "error", "error": "authentication failed"},
    )
    assert cookies == []


@pytest.mark.django_db
def test_the_back_office_keeps_its_whole_chain(settings: Any) -> None:
    # Admin pages without a collectstatic manifest (as in tests/admin).
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    factory = RequestFactory()
    status, headers, cookies, _ = serve(factory.get("/admin/login/").environ)
    assert status == 200
    assert headers["content-security-policy"].startswith("default-src 'self'")
    assert headers["x-frame-options"] == "DENY"
    assert any(c.startswith(f" {django_settings.CSRF_COOKIE_NAME}=") for c in cookies), cookies

    # CSRF is still enforced on its forms: a login without the token is refused.
    post = factory.post("/admin/login/", {"username": "a", "password": "b"})
    status, _, _, body = serve(post.environ)
    assert status == 403
    assert b"CSRF" in body

    status, headers, _, _ = serve(factory.get("/api/docs/").environ)
    assert status == 200
    assert "content-security-policy" in headers
