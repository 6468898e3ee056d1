"""/api/docs/ renders in a real browser with every outside request refused (no network)."""

from __future__ import annotations

import shutil
from typing import Any

import pytest
from django.db import connection

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(connection.vendor == "postgresql", reason="one database is enough"),
]


@pytest.fixture
def served_static(settings: Any) -> None:
    """Serve static files from the apps, as collectstatic would put them, without collecting."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


def test_the_docs_page_renders_every_operation_offline(
    live_server: Any, served_static: None
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    outside: list[str] = []
    problems: list[str] = []

    with sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        except Exception as exc:  # no browser on this machine
            pytest.skip(f"Chromium cannot start: {exc}")
        page = browser.new_page()

        def route(r: Any) -> None:
            if r.request.url.startswith(live_server.url):
                r.continue_()
            else:
                outside.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(f"{live_server.url}/api/docs/")
        page.wait_for_selector(".opblock", timeout=15_000)
        summaries = page.locator(".opblock-summary-path").all_inner_texts()
        browser.close()

    assert outside == []
    assert problems == []
    assert {s.replace("\u200b", "") for s in summaries} == {
        "/api/v1/purchases",
        "/api/v1/purchases/{order_id}",
        "/api/v1/balance",
        "/api/v1/ledger",
        "/api/v1/merchant",
        "/new_purchase",
    }
