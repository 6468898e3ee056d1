"""The floor's one view: the least work a purchase POST must do, in plain Django.

Look the key up by its prefix (one indexed SELECT) and compare its keyed hash, insert the
purchase, make one upstream call over a kept-alive session, update the row, answer JSON.
No validation beyond what the work needs, no ledger, no idempotency, no logging: the
gateway does all of that, and the distance between the two is what it costs.

`/api/v1/purchases` does it in SQL by hand; `/orm/purchases` does the same three statements
through the ORM, to tell how much of that distance is the ORM itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import requests
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.urls import path
from requests.adapters import HTTPAdapter

_session = requests.Session()
_session.mount("http://", HTTPAdapter(pool_maxsize=settings.CASHBACK_HTTP_POOL_SIZE))

_KEY_SQL = (
    "SELECT k.hashed_key, k.merchant_id, m.public_id FROM merchants_apikey k "
    "JOIN merchants_merchant m ON m.id = k.merchant_id "
    "WHERE k.prefix = %s AND k.revoked_at IS NULL"
)
_INSERT_SQL = (
    "INSERT INTO cashback_purchase (id, merchant_id, order_id, customer, description, "
    "address, currency, amount_minor, requested_percentage, percentage, status, attempts, "
    "reserved_minor, hold, created_at, updated_at) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 0, 0, 'sending', 1, 0, 'none', %s, %s)"
)
_UPDATE_SQL = (
    "UPDATE cashback_purchase SET status = 'sent', cashback_amount = %s, unit = %s, "
    "updated_at = %s, sent_at = %s WHERE id = %s"
)


def _upstream(public_id: str, data: dict[str, str]) -> dict[str, object]:
    return _session.post(
        settings.CASHBACK_API_URL,
        data={
            "partner": settings.CASHBACK_PARTNER,
            "partner_key": settings.CASHBACK_PARTNER_KEY,
            "merchant": public_id,
            "customer": data["customer"],
            "order_id": data["order_id"],
            "description": data.get("description", ""),
            "address": data["address"],
            "currency": data["currency"],
            "currency_amount": data["currency_amount"],
            "partner_cashback_percentage": "0",
        },
        timeout=settings.CASHBACK_TIMEOUT,
    ).json()


def _json(data: dict[str, object], status: int = 200) -> HttpResponse:
    body = json.dumps(data).encode()
    response = HttpResponse(body, status=status, content_type="application/json")
    response["Content-Length"] = str(len(body))
    return response


def purchase(request: HttpRequest) -> HttpResponse:
    """Store one purchase, send it upstream, record the answer."""
    raw = request.headers.get("Authorization", "").removeprefix("Bearer ")
    digest = hmac.new(settings.API_KEY_HMAC_SECRET.encode(), raw.encode(), hashlib.sha256)
    with connection.cursor() as cursor:
        cursor.execute(_KEY_SQL, [raw[4:14]])
        row = cursor.fetchone()
        if row is None or not hmac.compare_digest(row[0], digest.hexdigest()):
            return _json({"detail": "Invalid or missing API key."}, 401)
        _, merchant_id, public_id = row
        data = json.loads(request.body)
        purchase_id, now = uuid.uuid4(), datetime.now(UTC)
        amount = Decimal(data["currency_amount"])
        cursor.execute(
            _INSERT_SQL,
            [
                purchase_id,
                merchant_id,
                data["order_id"],
                data["customer"],
                data.get("description", ""),
                data["address"],
                data["currency"],
                int(amount * 100),
                now,
                now,
            ],
        )
        answer = _upstream(public_id, data)
        done = datetime.now(UTC)
        cursor.execute(
            _UPDATE_SQL, [answer["cashback_amount"], answer["unit"], done, done, purchase_id]
        )
    return _json(
        {
            "id": str(purchase_id),
            "order_id": data["order_id"],
            "status": "sent",
            "cashback_amount": answer["cashback_amount"],
            "unit": answer["unit"],
        },
        201,
    )


def purchase_orm(request: HttpRequest) -> HttpResponse:
    """Do what `purchase` does, through the ORM."""
    from cashback.models import Purchase
    from merchants.models import ApiKey

    raw = request.headers.get("Authorization", "").removeprefix("Bearer ")
    digest = hmac.new(settings.API_KEY_HMAC_SECRET.encode(), raw.encode(), hashlib.sha256)
    key = next(
        iter(ApiKey.objects.select_related("merchant").filter(prefix=raw[4:14]).order_by()[:1]),
        None,
    )
    if key is None or not hmac.compare_digest(key.hashed_key, digest.hexdigest()):
        return _json({"detail": "Invalid or missing API key."}, 401)
    data = json.loads(request.body)
    now = datetime.now(UTC)
    stored = Purchase.objects.create(
        merchant=key.merchant,
        order_id=data["order_id"],
        customer=data["customer"],
        description=data.get("description", ""),
        address=data["address"],
        currency=data["currency"],
        amount_minor=int(Decimal(data["currency_amount"]) * 100),
        requested_percentage=0,
        percentage=0,
        status="sending",
        attempts=1,
        created_at=now,
        updated_at=now,
    )
    answer = _upstream(key.merchant.public_id, data)
    done = datetime.now(UTC)
    Purchase.objects.filter(pk=stored.pk).update(
        status="sent",
        cashback_amount=answer["cashback_amount"],
        unit=answer["unit"],
        updated_at=done,
        sent_at=done,
    )
    return _json(
        {
            "id": str(stored.pk),
            "order_id": data["order_id"],
            "status": "sent",
            "cashback_amount": answer["cashback_amount"],
            "unit": answer["unit"],
        },
        201,
    )


urlpatterns = [path("api/v1/purchases", purchase), path("orm/purchases", purchase_orm)]
