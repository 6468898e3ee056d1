"""Every write is audited with its actor, in the write's own transaction: the commands (the
OS user who ran them), the merchant's own PATCH (its API key), and alert resolution (a user)."""

from __future__ import annotations

import getpass
import json
import socket
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from audit import services as audit
from audit.models import AuditEvent
from cashback.alerts import resolve_alert
from cashback.models import Alert
from merchants.models import ApiKey, LedgerEntry, Merchant

pytestmark = pytest.mark.django_db


def cli(command: str) -> str:
    return f"{getpass.getuser()}@{socket.gethostname()} (manage.py {command})"


def rows(**filters: Any) -> list[tuple[str, str, str, dict[str, Any]]]:
    return [
        (e.actor_name, e.action, e.object_type, e.changes)
        for e in AuditEvent.objects.filter(**filters).order_by("id")
    ]


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_create_merchant_command_audits_the_merchant_and_its_key() -> None:
    run("create_merchant", "Cli Shop", "--id", "cli-shop", "--percentage", "2", "--json")
    merchant = Merchant.objects.get(public_id="cli-shop")
    key = ApiKey.objects.get(merchant=merchant)
    (added, issued) = AuditEvent.objects.order_by("id")
    assert (added.actor_name, added.actor, added.action, added.object_type, added.object_id) == (
        cli("create_merchant"),
        None,
        "add",
        "merchants.merchant",
        str(merchant.pk),
    )
    assert added.changes["public_id"] == [None, "cli-shop"]
    assert added.changes["default_percentage"] == [None, "2.00"]
    assert added.changes["max_percentage"] == [None, "10.00"]
    assert added.changes["webhook_secret"] == ["(secret)", "(secret), changed"]  # never a value
    assert (issued.action, issued.object_id, issued.changes) == (
        "issue_key",
        str(key.pk),
        {"expires_at": [None, None], "merchant": [None, "cli-shop"], "name": [None, "initial"]},
    )


def test_record_deposit_command_audits_the_entry(make_merchant: Any) -> None:
    shop = make_merchant()
    before = AuditEvent.objects.count()
    run("record_deposit", shop.merchant.public_id, "25.50", "EUR", "--memo", "wire 42")
    entry = LedgerEntry.objects.get(merchant=shop.merchant, kind="deposit")
    assert AuditEvent.objects.count() == before + 1
    assert rows(action="record_entry") == [
        (
            cli("record_deposit"),
            "record_entry",
            "merchants.ledgerentry",
            {
                "amount": [None, "25.50"],
                "currency": [None, "EUR"],
                "kind": [None, "deposit"],
                "memo": [None, "wire 42"],
                "merchant": [None, shop.merchant.public_id],
            },
        )
    ]
    assert AuditEvent.objects.get(action="record_entry").object_id == str(entry.pk)


def test_a_refused_deposit_writes_no_audit_row(make_merchant: Any) -> None:
    shop = make_merchant()
    before = AuditEvent.objects.count()
    with pytest.raises(Exception, match="positive"):
        run("record_deposit", shop.merchant.public_id, "-5", "EUR")
    assert AuditEvent.objects.count() == before


def test_rotate_api_key_command_audits_the_new_key_and_the_revoked_ones(make_merchant: Any) -> None:
    shop = make_merchant()
    old = ApiKey.objects.get(merchant=shop.merchant)
    out = json.loads(run("rotate_api_key", shop.merchant.public_id, "--revoke-old", "--json"))
    new = ApiKey.objects.exclude(pk=old.pk).get(merchant=shop.merchant)
    old.refresh_from_db()
    assert out["key"] == str(new)
    events = list(AuditEvent.objects.filter(actor_name=cli("rotate_api_key")).order_by("id"))
    assert [(e.action, e.object_id) for e in events] == [
        ("issue_key", str(new.pk)),
        ("revoke_key", str(old.pk)),
    ]
    assert events[0].changes == {
        "expires_at": [None, None],
        "merchant": [None, shop.merchant.public_id],
        "name": [None, new.name],
    }
    assert events[1].changes == {"revoked_at": [None, old.revoked_at.isoformat()]}


def test_rotate_with_expiry_audits_the_new_expiry(make_merchant: Any) -> None:
    shop = make_merchant()
    old = ApiKey.objects.get(merchant=shop.merchant)
    run("rotate_api_key", shop.merchant.public_id, "--expire-old-in", "2")
    old.refresh_from_db()
    (expired,) = AuditEvent.objects.filter(action="expire_key")
    assert (expired.object_id, expired.changes) == (
        str(old.pk),
        {"expires_at": [None, old.expires_at.isoformat()]},
    )


def test_the_merchants_patch_is_audited_with_its_api_key(make_merchant: Any) -> None:
    shop = make_merchant()
    key = ApiKey.objects.get(merchant=shop.merchant)
    url = "http://127.0.0.1:9/hooks"
    response = shop.client.patch("/api/v1/merchant", {"webhook_url": url}, format="json")
    assert response.status_code == 200, response.content
    secret = response.json()["webhook_secret"]
    (event,) = AuditEvent.objects.filter(action="change")
    assert (event.actor_name, event.actor, event.object_id) == (
        f"api key {key} of {shop.merchant.public_id}",
        None,
        str(shop.merchant.pk),
    )
    assert event.changes == {
        "webhook_secret": ["(secret)", "(secret), changed"],
        "webhook_url": ["", url],
    }
    assert secret not in json.dumps(event.changes)

    # The same URL again changes nothing, so nothing is written.
    again = shop.client.patch("/api/v1/merchant", {"webhook_url": url}, format="json")
    assert again.status_code == 200
    assert AuditEvent.objects.filter(action="change").count() == 1
    # A rotation changes only the secret.
    rotated = shop.client.patch("/api/v1/merchant", {"rotate_webhook_secret": True}, format="json")
    assert rotated.json()["webhook_secret"] not in (None, secret)
    assert [e.changes for e in AuditEvent.objects.filter(action="change").order_by("id")][1] == {
        "webhook_secret": ["(secret)", "(secret), changed"]
    }
    # A refused body stores nothing and audits nothing.
    bad = shop.client.patch("/api/v1/merchant", {"webhook_url": "ftp://x/"}, format="json")
    assert bad.status_code == 400
    assert AuditEvent.objects.filter(action="change").count() == 2


def test_the_patch_and_its_audit_row_commit_together(make_merchant: Any, monkeypatch: Any) -> None:
    shop = make_merchant()

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("audit log unavailable")

    monkeypatch.setattr(audit, "record", broken)
    with pytest.raises(RuntimeError):
        shop.client.patch(
            "/api/v1/merchant", {"webhook_url": "http://127.0.0.1:9/hooks"}, format="json"
        )
    shop.merchant.refresh_from_db()
    assert (shop.merchant.webhook_url, shop.merchant.webhook_secret) == ("", "")


def test_resolving_an_alert_is_audited_once(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    now = timezone.now()
    alert = Alert.objects.create(
        kind=Alert.Kind.RUNWAY_LOW, subject="shop-1:EUR", message="m", first_seen=now, last_seen=now
    )
    user = User.objects.create_superuser("boss", "boss@example.com", "pw-boss-0123")
    client = Client()
    client.force_login(user)
    response = client.post(
        "/admin/cashback/alert/", {"action": "resolve", "_selected_action": [alert.pk], "index": 0}
    )
    assert response.status_code == 302
    alert.refresh_from_db()
    assert alert.resolved_at is not None
    assert rows(action="resolve_alert") == [
        (
            "boss",
            "resolve_alert",
            "cashback.alert",
            {"resolved_at": [None, alert.resolved_at.isoformat()]},
        )
    ]
    assert AuditEvent.objects.get(action="resolve_alert").actor == user
    assert resolve_alert(alert.pk, user) is False  # already resolved: nothing more
    assert AuditEvent.objects.filter(action="resolve_alert").count() == 1
