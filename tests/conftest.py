"""Fixtures shared by the whole suite: merchants with API keys, API clients, and a real
local upstream (the project's sandbox, on a free port) that each test can misbehave."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from cashback.sandbox import SandboxServer, start_in_thread
from merchants.models import Merchant
from merchants.services import create_merchant

ADDRESS = "WR5FPYE6LHBQ57ZCFUTJXDDNHWK5355S"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the lines tests recorded with `record_property("summary", …)`, xdist or not."""
    for outcome in ("passed", "failed"):
        for report in terminalreporter.stats.get(outcome, []):
            for name, value in getattr(report, "user_properties", []):
                if name == "summary" and report.when == "call":
                    terminalreporter.write_line(str(value))


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Skip tests marked `postgres` when the suite runs on SQLite."""
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (concurrency is only proven there)")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _test_client_chains_like_production() -> Iterator[None]:
    """Serve the test client's requests through the chain gunicorn would (gateway/wsgi.py).

    Django's test client builds one handler from the whole MIDDLEWARE; here each of its
    handlers builds the API's short chain too, and each request takes its path's chain, so
    every API test runs what production runs.
    """
    from django.conf import settings
    from django.test.client import ClientHandler

    from gateway import wsgi

    call = ClientHandler.__call__
    hooks = (
        "_middleware_chain",
        "_view_middleware",
        "_template_response_middleware",
        "_exception_middleware",
    )

    def routed(self: ClientHandler, environ: dict[str, Any]) -> Any:
        api = wsgi.serves_api(environ.get("PATH_INFO", ""))
        chains = self.__dict__.setdefault("_chains_by_route", {})
        if api not in chains:
            with wsgi.middleware(settings.API_MIDDLEWARE if api else settings.MIDDLEWARE):
                self.load_middleware()
            chains[api] = tuple(getattr(self, name) for name in hooks)
        for name, value in zip(hooks, chains[api], strict=True):
            setattr(self, name, value)
        return call(self, environ)

    ClientHandler.__call__ = routed  # type: ignore[method-assign]
    yield
    ClientHandler.__call__ = call  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def throttle_dir(tmp_path_factory: Any) -> Path:
    return Path(tmp_path_factory.mktemp("throttles"))


@pytest.fixture(autouse=True)
def _own_throttle_counters(settings: Any, throttle_dir: Path) -> None:
    """Give each test host-local throttle counters of its own (gateway.throttling.HostStore)."""
    settings.THROTTLE_HOST_DB = str(throttle_dir / f"{uuid.uuid4().hex}.sqlite3")


@pytest.fixture(autouse=True)
def _spool_in_tmp(settings: Any, tmp_path_factory: Any) -> None:
    """Keep answers a test's database trouble spools out of the project's var/spool."""
    settings.CASHBACK_SPOOL_DIR = str(tmp_path_factory.mktemp("spool"))


@pytest.fixture
def upstream(settings: Any) -> Iterator[SandboxServer]:
    """A real sandbox upstream on a free port; the gateway is pointed at it."""
    server = start_in_thread(settings.CASHBACK_PARTNER, settings.CASHBACK_PARTNER_KEY)
    settings.CASHBACK_API_URL = server.url
    yield server
    server.shutdown()
    server.server_close()


class MerchantWithKey:
    """A merchant, its raw API key, and an API client that sends the key."""

    def __init__(self, merchant: Merchant, key: str) -> None:
        self.merchant = merchant
        self.key = key
        self.client = APIClient()
        self.client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")

    def post_purchase(self, **fields: Any) -> Any:
        return self.client.post("/api/v1/purchases", purchase_body(**fields), format="json")


def purchase_body(**overrides: Any) -> dict[str, Any]:
    """Return a valid purchase request body, with `overrides` applied (None removes a field)."""
    body: dict[str, Any] = {
        "customer": "c-42",
        "order_id": "A-1001",
        "description": "coffee",
        "address": ADDRESS,
        "currency": "EUR",
        "currency_amount": "12.50",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


@pytest.fixture
def make_merchant(db: None) -> Any:
    counter = iter(range(1, 10_000))

    def make(
        percentage: str = "0",
        max_percentage: str | None = None,
        policy: str = "downgrade",
        **kw: Any,
    ) -> MerchantWithKey:
        n = next(counter)
        merchant, key = create_merchant(
            kw.pop("name", f"Shop {n}"),
            public_id=kw.pop("public_id", f"shop-{n}"),
            percentage=Decimal(percentage),
            max_percentage=Decimal(max_percentage) if max_percentage else None,
            policy=policy,
        )
        return MerchantWithKey(merchant, key)

    return make


@pytest.fixture
def shop(make_merchant: Any) -> MerchantWithKey:
    """A merchant with default percentage 0 and an API key."""
    return make_merchant()


@pytest.fixture
def is_postgres() -> bool:
    return connection.vendor == "postgresql"
