"""Bodies the gateway cannot read as meant: a 400 on the REST API and upstream's
`{"result": "error"}` on `/new_purchase` (credentials or not), never a 500 or an HTML page."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import Client

from cashback.models import Purchase
from tests.conftest import purchase_body
from tests.dropin.test_new_purchase import known_client_fields

BOUNDARY = "xYzZY"
TOO_DEEP = "JSON nested deeper than 20 levels."


def rest(shop: Any, raw: bytes | str, content_type: str = "application/json") -> Any:
    return shop.client.generic("POST", "/api/v1/purchases", raw, content_type=content_type)


def dropin(raw: bytes | str, content_type: str) -> Any:
    return Client().generic("POST", "/new_purchase", raw, content_type=content_type)


def multipart(parts: list[tuple[str, str | None, bytes]]) -> bytes:
    """Return a multipart/form-data body of (name, filename or None, content) parts."""
    out = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        out += content + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


@pytest.fixture(autouse=True)
def _db(db: None) -> None:
    """Every test may reach the database (the drop-in authenticates, sessions close)."""


def assert_nothing_stored(upstream: Any) -> None:
    assert Purchase.objects.count() == 0
    assert upstream.state.requests == 0


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


# --- JSON nesting --------------------------------------------------------------------------

DEEP_BODIES = [
    '{"customer": ' + nested(5000) + "}",
    '{"a": ' * 3000 + "1" + "}" * 3000,
    '{"customer": ' + nested(20) + "}",  # 21 levels with the outer object
    nested(100_000 // 2 // 2),  # 25,000 levels, well within 64 KiB
]


@pytest.mark.parametrize("raw", DEEP_BODIES, ids=["arrays", "objects", "21", "bare"])
def test_json_nested_too_deep_is_400(shop: Any, upstream: Any, raw: str) -> None:
    response = rest(shop, raw)

    assert (response.status_code, response.json()) == (400, {"detail": TOO_DEEP})
    assert_nothing_stored(upstream)


@pytest.mark.parametrize("raw", DEEP_BODIES, ids=["arrays", "objects", "21", "bare"])
def test_json_nested_too_deep_is_a_drop_in_error_without_credentials(
    upstream: Any, raw: str
) -> None:
    response = dropin(raw, "application/json")

    assert (response.status_code, response.json()) == (200, {"result": "error", "error": TOO_DEEP})
    assert_nothing_stored(upstream)


def test_twenty_levels_are_parsed_and_brackets_in_strings_do_not_count(
    shop: Any, upstream: Any
) -> None:
    twenty = rest(shop, '{"customer": ' + nested(19) + "}")
    brackets = rest(shop, json.dumps(purchase_body(description="[{" * 400)))

    assert twenty.status_code == 400
    assert twenty.json()["customer"] == ["Not a valid string."]
    assert brackets.status_code == 201, brackets.content
    assert Purchase.objects.get().description == "[{" * 400


# --- Charsets ------------------------------------------------------------------------------

REFUSED_CHARSETS = ["rot13", "base64", "zlib", "utf-7", "utf-16", "x-no-such-charset"]


@pytest.mark.parametrize("charset", REFUSED_CHARSETS)
def test_a_json_body_in_another_charset_is_400(shop: Any, upstream: Any, charset: str) -> None:
    response = rest(shop, json.dumps(purchase_body()), f"application/json; charset={charset}")

    assert response.status_code == 400
    assert response.json() == {"detail": f"Unsupported charset '{charset}': send UTF-8."}
    assert_nothing_stored(upstream)


@pytest.mark.parametrize("charset", REFUSED_CHARSETS)
def test_a_drop_in_body_in_another_charset_is_an_error_without_credentials(
    upstream: Any, charset: str
) -> None:
    as_json = dropin('{"customer": "c"}', f"application/json; charset={charset}")
    as_form = dropin("customer=c", f"application/x-www-form-urlencoded; charset={charset}")
    as_multipart = dropin(
        multipart([("customer", None, b"c")]),
        f"multipart/form-data; boundary={BOUNDARY}; charset={charset}",
    )

    expected = {"result": "error", "error": f"Unsupported charset '{charset}': send UTF-8."}
    for response in (as_json, as_form, as_multipart):
        assert (response.status_code, response.json()) == (200, expected)
    assert_nothing_stored(upstream)


@pytest.mark.parametrize("charset", ["utf-8", "UTF-8", "utf8"])
def test_utf_8_by_any_of_its_names_is_read(shop: Any, upstream: Any, charset: str) -> None:
    response = rest(shop, json.dumps(purchase_body()), f"application/json; charset={charset}")

    assert response.status_code == 201, response.content


def test_a_latin_1_form_is_read_in_latin_1(shop: Any, upstream: Any) -> None:
    fields = known_client_fields(shop, customer="café")
    raw = urlencode(fields, encoding="latin-1")

    response = dropin(raw, "application/x-www-form-urlencoded; charset=iso-8859-1")

    assert response.json()["result"] == "ok", response.content
    assert Purchase.objects.get().customer == "café"


# --- Forms ---------------------------------------------------------------------------------


def test_more_than_1000_form_fields_is_a_drop_in_error(upstream: Any) -> None:
    too_many = "&".join(f"f{n}=1" for n in range(1001))
    at_limit = "&".join(f"f{n}=1" for n in range(1000))

    refused = dropin(too_many, "application/x-www-form-urlencoded")
    read = dropin(at_limit, "application/x-www-form-urlencoded")

    assert (refused.status_code, refused.json()) == (
        200,
        {"result": "error", "error": "More than 1000 form fields."},
    )
    assert read.json() == {"result": "error", "error": "authentication failed"}
    assert_nothing_stored(upstream)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("customer=%zz&order_id=1", "The form data has a malformed percent escape."),
        ("customer=100%&order_id=1", "The form data has a malformed percent escape."),
        ("customer=caf%E9", "The form data is not valid utf-8."),
        (b"customer=caf\xe9", "The form data is not valid utf-8."),
        ("customer=%ED%A0%80", "The form data is not valid utf-8."),  # an encoded surrogate
    ],
)
def test_unreadable_form_data_is_a_drop_in_error(
    upstream: Any, raw: str | bytes, message: str
) -> None:
    response = dropin(raw, "application/x-www-form-urlencoded")

    assert (response.status_code, response.json()) == (200, {"result": "error", "error": message})
    assert_nothing_stored(upstream)


def test_too_many_multipart_fields_or_files_is_a_drop_in_error(upstream: Any) -> None:
    content_type = f"multipart/form-data; boundary={BOUNDARY}"
    fields = dropin(multipart([(f"f{n}", None, b"1") for n in range(1001)]), content_type)
    files = dropin(multipart([(f"f{n}", f"{n}.txt", b"1") for n in range(101)]), content_type)

    assert fields.status_code == files.status_code == 200
    assert fields.json() == {
        "result": "error",
        "error": "Multipart form refused - The number of GET/POST parameters exceeded "
        "settings.DATA_UPLOAD_MAX_NUMBER_FIELDS.",
    }
    assert files.json() == {
        "result": "error",
        "error": "Multipart form refused - The number of files exceeded "
        "settings.DATA_UPLOAD_MAX_NUMBER_FILES.",
    }
    assert_nothing_stored(upstream)


@pytest.mark.parametrize(
    ("content_type", "raw"),
    [
        ("multipart/form-data", multipart([("customer", None, b"c")])),
        ("multipart/form-data; boundary=", multipart([("customer", None, b"c")])),
    ],
    ids=["no-boundary", "empty-boundary"],
)
def test_a_broken_multipart_boundary_is_a_drop_in_error(
    upstream: Any, content_type: str, raw: bytes
) -> None:
    response = dropin(raw, content_type)

    assert response.status_code == 200
    body = response.json()
    assert body["result"] == "error"
    assert body["error"].startswith("Multipart form parse error - Invalid boundary in multipart")
    assert_nothing_stored(upstream)


def test_non_utf_8_multipart_data_is_a_drop_in_error(shop: Any, upstream: Any) -> None:
    fields = known_client_fields(shop)
    parts = [(k, None, v.encode()) for k, v in fields.items() if k != "customer"]
    parts.append(("customer", None, b"caf\xe9"))

    response = dropin(multipart(parts), f"multipart/form-data; boundary={BOUNDARY}")

    assert response.json() == {"result": "error", "error": "The form data is not valid utf-8."}
    assert_nothing_stored(upstream)


def test_a_multipart_purchase_is_still_read(shop: Any, upstream: Any) -> None:
    fields = known_client_fields(shop, customer="café")
    parts = [(k, None, v.encode()) for k, v in fields.items()]

    response = dropin(multipart(parts), f"multipart/form-data; boundary={BOUNDARY}")

    assert response.json()["result"] == "ok", response.content
    assert Purchase.objects.get().customer == "café"
