"""Fixtures for admin tests: a processor admin, an accountant, purchases, and form helpers."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from cashback.models import Purchase, Status
from merchants.models import Merchant
from tests.conftest import ADDRESS

RAW_KEY = re.compile(r"cbk_[0-9a-f]{10}[A-Za-z0-9_-]{44}")


@pytest.fixture(autouse=True)
def _admin_test_settings(settings: Any) -> None:
    """Render admin pages without a collectstatic manifest (DEBUG is off in tests)."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    # Users are made in every test; a deliberately slow hash would dominate the suite's time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def superuser(django_user_model: Any) -> Any:
    return django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")


@pytest.fixture
def accountant(django_user_model: Any) -> Any:
    user = django_user_model.objects.create_user(
        "counter", "counter@example.com", "pw-counter-123", is_staff=True
    )
    user.groups.add(Group.objects.get(name="Accountants"))
    return user


@pytest.fixture
def admin_client(superuser: Any) -> Client:
    client = Client()
    client.force_login(superuser)
    return client


@pytest.fixture
def accountant_client(accountant: Any) -> Client:
    client = Client()
    client.force_login(accountant)
    return client


def make_purchase(merchant: Merchant, order_id: str, **fields: Any) -> Purchase:
    """Store a purchase row directly (no upstream call), `unknown` unless told otherwise."""
    values: dict[str, Any] = {
        "customer": "c-42",
        "address": ADDRESS,
        "currency": "EUR",
        "amount_minor": 1250,
        "requested_percentage": Decimal("0"),
        "percentage": Decimal("0"),
        "status": Status.UNKNOWN,
        "attempts": 1,
    }
    values.update(fields)
    return Purchase.objects.create(merchant=merchant, order_id=order_id, **values)


def change_form_data(response: Any) -> dict[str, Any]:
    """Return the POST data an unchanged admin change form would submit, inlines included."""
    data: dict[str, Any] = {}

    def add(form: Any) -> None:
        for name in form.fields:
            value = form[name].value()
            if value is None or value is False:
                continue
            data[form.add_prefix(name)] = "on" if value is True else str(value)

    add(response.context["adminform"].form)
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        management = formset.management_form
        for name in management.fields:
            data[management.add_prefix(name)] = str(management[name].value())
        for form in formset.forms:
            add(form)
    return data


def inline_prefix(response: Any, form_class: type) -> str:
    """Return the prefix of the inline formset whose forms are `form_class`."""
    for inline in response.context["inline_admin_formsets"]:
        if issubclass(inline.formset.form, form_class):
            return str(inline.formset.prefix)
    raise AssertionError(f"no inline of {form_class.__name__}")


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]
