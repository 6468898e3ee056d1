"""The OpenAPI schema: valid OpenAPI 3 without warnings, truthful, and its docs page offline."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

# The codes each operation can really answer (status code → documented).
EXPECTED_CODES = {
    ("/api/v1/purchases", "get"): {"200", "400", "401", "403", "404", "429"},
    ("/api/v1/purchases", "post"): {
        "200",
        "201",
        "202",
        "400",
        "401",
        "402",
        "403",
        "409",
        "413",
        "415",
        "422",
        "429",
    },
    ("/api/v1/purchases/{order_id}", "get"): {"200", "401", "403", "404", "429"},
    ("/api/v1/balance", "get"): {"200", "401", "403", "429"},
    ("/api/v1/ledger", "get"): {"200", "401", "403", "404", "429"},
    ("/api/v1/merchant", "get"): {"200", "401", "403", "429"},
    ("/api/v1/merchant", "patch"): {"200", "400", "401", "403", "413", "415", "429"},
    ("/new_purchase", "post"): {"200", "413", "429"},
}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    response = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def test_the_schema_validates_as_openapi_3_without_warnings(tmp_path: Path) -> None:
    # --fail-on-warn turns any drf-spectacular warning or error into a CommandError.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "s.yaml"))

    assert (tmp_path / "s.yaml").read_text().startswith("openapi: 3.0.3\n")


def test_every_operation_lists_exactly_the_codes_it_can_answer(schema: dict[str, Any]) -> None:
    operations = {
        (path, method): set(op["responses"])
        for path, item in schema["paths"].items()
        for method, op in item.items()
    }

    assert operations == EXPECTED_CODES


def test_the_api_key_is_a_bearer_scheme_required_everywhere_but_the_drop_in(
    schema: dict[str, Any],
) -> None:
    assert schema["components"]["securitySchemes"] == {
        "apiKey": {"type": "http", "scheme": "bearer"}
    }
    for path, item in schema["paths"].items():
        for op in item.values():
            expected = None if path == "/new_purchase" else [{"apiKey": []}]
            assert op.get("security") == expected, path


def test_every_error_and_field_is_described(schema: dict[str, Any]) -> None:
    for path, item in schema["paths"].items():
        for method, op in item.items():
            for code, response in op["responses"].items():
                if code.startswith(("4", "5")):
                    assert response["description"], (path, method, code)
                    assert "application/json" in response["content"], (path, method, code)
    request = schema["components"]["schemas"]["PurchaseRequestRequest"]["properties"]
    for name in ("customer", "order_id", "address", "currency_amount"):
        assert request[name]["description"], name


def test_the_purchase_operation_has_examples_for_each_answer(schema: dict[str, Any]) -> None:
    op = schema["paths"]["/api/v1/purchases"]["post"]
    with_examples = {
        code
        for code, r in op["responses"].items()
        if r["content"]["application/json"].get("examples")
    }

    assert with_examples == {"200", "201", "202", "400", "402", "409", "422"}
    assert op["requestBody"]["content"]["application/json"]["examples"]
    assert op["responses"]["200"]["headers"]["Idempotent-Replayed"]["required"] is True
    assert "Retry-After" in op["responses"]["429"]["headers"]


def test_the_drop_in_endpoint_is_documented_for_form_and_json(schema: dict[str, Any]) -> None:
    op = schema["paths"]["/new_purchase"]["post"]
    content = op["requestBody"]["content"]

    assert set(content) == {"application/x-www-form-urlencoded", "application/json"}
    fields = schema["components"]["schemas"]["DropInRequest"]
    assert set(fields["required"]) == {
        "partner",
        "partner_key",
        "customer",
        "order_id",
        "address",
        "currency",
        "currency_amount",
    }
    answer = op["responses"]["200"]["content"]["application/json"]
    assert answer["schema"] == {"$ref": "#/components/schemas/DropInResult"}
    assert answer["examples"]["Sent"]["value"]["result"] == "ok"
    assert answer["examples"]["BadCredentials"]["value"] == {
        "result": "error",
        "error": "authentication failed",
    }


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]


@pytest.fixture
def served_static(settings: Any) -> None:
    """Serve static files from the apps, as collectstatic would put them, without collecting."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    settings.WHITENOISE_USE_FINDERS = True


def test_the_docs_page_uses_only_the_gateways_own_assets(db: None, served_static: None) -> None:
    client = Client()  # a new client loads the middleware with the settings above

    page = client.get("/api/docs/")

    assert page.status_code == 200
    assert "script-src 'self';" in page["Content-Security-Policy"]
    html = page.content.decode()
    assert not re.search(r"https?://|//[a-z]", html), "the page names an outside URL"
    parser = _Assets()
    parser.feed(html)
    scripts = [u for u in parser.urls if u.endswith(".js") or "script" in u]
    assert len(scripts) == 3  # swagger-ui bundle, its preset, and the page's own script
    for url in parser.urls:
        asset = client.get(url)
        assert asset.status_code == 200, url
    script = client.get("/api/docs/?script=").content.decode()
    assert '"validatorUrl": null' in script
    assert not re.search(r"https?://", script)
