"""`make run`'s setup_demo: only the printed key works, and its curl stores a new purchase."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from merchants.models import ApiKey

pytestmark = pytest.mark.django_db


def run_setup_demo() -> tuple[str, dict[str, Any]]:
    out = io.StringIO()
    call_command("setup_demo", stdout=out)
    text = out.getvalue()
    key = re.search(r"Bearer (cbk_[A-Za-z0-9_-]+)", text)
    body = re.search(r"-d '(\{.*\})'", text)
    assert key and body, text
    return key.group(1), json.loads(body.group(1))


def test_each_run_prints_the_only_active_key_and_a_new_order_id(
    upstream: Any, client: Client, settings: Any, monkeypatch: Any
) -> None:
    first_key, first_body = run_setup_demo()
    assert (
        ApiKey.objects.filter(merchant__public_id="demo-shop", revoked_at__isnull=True).count() == 1
    )

    answer = client.post(
        "/api/v1/purchases",
        first_body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {first_key}",
    )
    assert answer.status_code == 201, answer.content

    second_key, second_body = run_setup_demo()

    assert second_body["order_id"] != first_body["order_id"]
    active = ApiKey.objects.filter(merchant__public_id="demo-shop", revoked_at__isnull=True)
    assert active.count() == 1
    again = client.post(
        "/api/v1/purchases",
        second_body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {second_key}",
    )
    assert again.status_code == 201, again.content
    old = client.post(
        "/api/v1/purchases",
        second_body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {first_key}",
    )
    assert old.status_code == 401
