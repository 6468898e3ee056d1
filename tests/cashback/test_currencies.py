"""Purchases in currencies upstream does not take: converted at the ECB rate of their time.

Rates are loaded the way production loads them, with `manage.py update_rates`, from an ECB
CSV (or zip) that a real local HTTP server serves; the amounts upstream received are read
from the local sandbox.
"""

from __future__ import annotations

import csv
import io
import threading
import zipfile
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from cashback import fx, reports
from cashback.models import Purchase, Rate
from cashback.reports import Period, ReportFilter
from merchants.models import Balance, EntryKind, Merchant
from merchants.services import record_entry
from tests.conftest import ADDRESS

HEADER = "Date,USD,JPY,GBP,CHF,"


def today() -> date:
    return timezone.now().date()


def ecb_csv(rows: dict[date, str]) -> bytes:
    """Return an ECB history CSV: one line per day, newest first, as the ECB writes it."""
    lines = [HEADER] + [f"{d.isoformat()},{rows[d]}," for d in sorted(rows, reverse=True)]
    return ("\n".join(lines) + "\n").encode()


def zipped(csv_bytes: bytes, name: str = "eurofxref-hist.csv") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, csv_bytes)
    return buffer.getvalue()


class RatesServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RatesHandler)
        self.body = b""
        self.status = 200
        self.requests = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/stats/eurofxref/eurofxref-hist.zip"


class RatesHandler(BaseHTTPRequestHandler):
    server: RatesServer

    def do_GET(self) -> None:
        self.server.requests += 1
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def rates_server() -> Iterator[RatesServer]:
    server = RatesServer()
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def rates(rates_server: RatesServer, settings: Any, db: None) -> RatesServer:
    """Today's and yesterday's rates, loaded with `update_rates` from the local server."""
    rates_server.body = zipped(
        ecb_csv(
            {
                today(): "1.1172,175.68,0.8338,0.9194",
                today() - timedelta(days=1): "1.1000,170.00,0.8000,0.9000",
            }
        )
    )
    settings.FX_RATES_URL = rates_server.url
    call_command("update_rates", stdout=io.StringIO())
    return rates_server


def sent_upstream(upstream: Any, order_id: str) -> dict[str, str]:
    [fields] = [f for f in upstream.state.log if f.get("order_id") == order_id]
    return fields


# --- The REST API --------------------------------------------------------------------------


def test_a_gbp_purchase_is_sent_upstream_in_eur_at_todays_rate(
    shop: Any, upstream: Any, rates: Any
) -> None:
    response = shop.post_purchase(currency="GBP", currency_amount="12.50")

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["currency"], body["currency_amount"]) == ("GBP", "12.50")
    assert (body["settlement_currency"], body["settlement_amount"]) == ("EUR", "14.99")
    assert body["fx"] == {
        "rate": "0.8338",
        "settlement_rate": None,
        "date": today().isoformat(),
        "source": "ECB",
    }
    # 12.50 / 0.8338 = 14.9916…, rounded half-even to cents.
    fields = sent_upstream(upstream, "A-1001")
    assert (fields["currency"], fields["currency_amount"]) == ("EUR", "14.99")
    p = Purchase.objects.get()
    assert (p.original_currency, p.original_amount_minor) == ("GBP", 1250)
    assert (p.currency, p.amount_minor, p.fx_rate, p.fx_rate_date) == (
        "EUR",
        1499,
        "0.8338",
        today(),
    )


def test_a_usd_settling_merchant_gets_the_cross_rate_via_eur_rounded_once(
    shop: Any, upstream: Any, rates: Any
) -> None:
    Merchant.objects.filter(pk=shop.merchant.pk).update(settlement_currency="USD")

    response = shop.post_purchase(currency="GBP", currency_amount="12.50")

    assert response.status_code == 201, response.content
    body = response.json()
    # 12.50 × 1.1172 / 0.8338 = 16.7486…: one rounding, of the exact quotient.
    assert (body["settlement_currency"], body["settlement_amount"]) == ("USD", "16.75")
    assert body["fx"]["settlement_rate"] == "1.1172"
    fields = sent_upstream(upstream, "A-1001")
    assert (fields["currency"], fields["currency_amount"]) == ("USD", "16.75")


def test_a_currency_without_minor_units_converts_whole_amounts(
    shop: Any, upstream: Any, rates: Any
) -> None:
    response = shop.post_purchase(currency="JPY", currency_amount="1000")
    assert response.status_code == 201, response.content
    assert response.json()["settlement_amount"] == "5.69"  # 1000 / 175.68 = 5.6921…

    response = shop.post_purchase(order_id="A-2", currency="JPY", currency_amount="1000.5")
    assert response.status_code == 400
    assert response.json()["currency_amount"] == ["JPY amounts have at most 0 decimal places"]


def test_upstream_currencies_are_sent_as_they_are(shop: Any, upstream: Any, rates: Any) -> None:
    Merchant.objects.filter(pk=shop.merchant.pk).update(settlement_currency="USD")

    body = shop.post_purchase(currency="EUR", currency_amount="12.50").json()

    assert (body["currency"], body["settlement_currency"], body["fx"]) == ("EUR", "EUR", None)
    fields = sent_upstream(upstream, "A-1001")
    assert (fields["currency"], fields["currency_amount"]) == ("EUR", "12.5")


def test_the_rate_of_the_purchase_day_is_used_never_a_later_one(
    shop: Any, upstream: Any, rates_server: RatesServer, settings: Any
) -> None:
    rates_server.body = ecb_csv(
        {
            today() - timedelta(days=1): "1.1000,170.00,0.8000,0.9000",
            today() + timedelta(days=1): "1.2000,180.00,0.9000,0.9500",
        }
    )
    settings.FX_RATES_URL = rates_server.url
    call_command("update_rates", stdout=io.StringIO())

    body = shop.post_purchase(currency="GBP", currency_amount="12.50").json()

    assert body["settlement_amount"] == "15.62"  # 12.50 / 0.8000 = 15.625: half-even
    assert body["fx"]["date"] == (today() - timedelta(days=1)).isoformat()


@pytest.mark.parametrize(("age", "ok"), [(4, True), (5, False)])
def test_a_rate_older_than_fx_max_age_days_is_refused_naming_the_currency(
    shop: Any, upstream: Any, age: int, ok: bool
) -> None:
    Rate.objects.create(currency="GBP", date=today() - timedelta(days=age), rate="0.8338")

    response = shop.post_purchase(currency="GBP", currency_amount="12.50")

    if ok:
        assert response.status_code == 201, response.content
        return
    assert response.status_code == 400
    message = (
        f"no current reference rate for GBP: the newest is of {today() - timedelta(days=age)}, "
        "and rates older than 4 days are not used."
    )
    assert response.json()["currency"] == [message]
    assert response.json()["detail"] == f"currency: {message}"
    assert Purchase.objects.count() == 0
    assert upstream.state.requests == 0


def test_a_stale_cross_rate_is_refused_too(shop: Any, upstream: Any, settings: Any) -> None:
    settings.FX_MAX_AGE_DAYS = 2
    Merchant.objects.filter(pk=shop.merchant.pk).update(settlement_currency="USD")
    Rate.objects.create(currency="GBP", date=today(), rate="0.8338")
    Rate.objects.create(currency="USD", date=today() - timedelta(days=3), rate="1.1172")

    response = shop.post_purchase(currency="GBP", currency_amount="12.50")

    assert response.status_code == 400
    assert response.json()["currency"][0].startswith("no current reference rate for USD")


def test_a_currency_with_no_rate_at_all_is_refused(shop: Any, upstream: Any) -> None:
    # The ECB stopped publishing RUB in 2022; the migration loads only the last year.
    response = shop.post_purchase(currency="RUB", currency_amount="10.00")

    assert response.status_code == 400
    assert response.json()["currency"] == [
        "no current reference rate for RUB: none is loaded, and rates older than 4 days are "
        "not used."
    ]


def test_the_reservation_comes_out_of_the_settlement_currency_deposit(
    make_merchant: Any, upstream: Any, rates: Any
) -> None:
    shop = make_merchant(percentage="10")
    record_entry(shop.merchant, EntryKind.DEPOSIT, Decimal("5.00"), "EUR")

    body = shop.post_purchase(currency="GBP", currency_amount="12.50").json()

    assert body["partner_cashback_percentage"] == "10"
    # 10 % of 14.99 EUR = 1.499, rounded up to 1.50 EUR.
    balance = Balance.objects.get(merchant=shop.merchant)
    assert (balance.currency, balance.available_minor, balance.reserved_minor) == ("EUR", 350, 0)
    assert Purchase.objects.get().reserved_minor == 150
    fields = sent_upstream(upstream, "A-1001")
    assert fields["partner_cashback_percentage"] == "10"


def test_no_settlement_deposit_downgrades_the_percentage(
    make_merchant: Any, upstream: Any, rates: Any
) -> None:
    shop = make_merchant(percentage="10")
    record_entry(shop.merchant, EntryKind.DEPOSIT, Decimal("100.00"), "USD")  # not EUR

    body = shop.post_purchase(currency="GBP", currency_amount="12.50").json()

    assert (body["requested_partner_cashback_percentage"], body["partner_cashback_percentage"]) == (
        "10",
        "0",
    )


def test_a_replay_after_a_rate_change_returns_the_stored_purchase(
    shop: Any, upstream: Any, rates: Any
) -> None:
    first = shop.post_purchase(currency="GBP", currency_amount="12.50")
    assert first.status_code == 201
    fx.record_override("GBP", today(), "0.5000", "test: the rate moved", None)

    again = shop.post_purchase(currency="GBP", currency_amount="12.50")

    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["settlement_amount"] == "14.99"
    assert again.json() == shop.client.get("/api/v1/purchases/A-1001").json()
    assert upstream.state.requests == 1

    other = shop.post_purchase(currency="GBP", currency_amount="12.51")
    assert other.status_code == 409
    assert other.json()["fields"] == ["currency_amount"]
    other = shop.post_purchase(currency="EUR", currency_amount="14.99")
    assert other.status_code == 409
    assert other.json()["fields"] == ["currency", "currency_amount"]


def test_an_override_is_used_and_wins_over_the_ecb_rate_of_its_day(
    shop: Any, upstream: Any, rates: Any
) -> None:
    fx.record_override("GBP", today(), "0.8500", "ECB feed wrong today", None)

    body = shop.post_purchase(currency="GBP", currency_amount="12.50").json()

    assert body["settlement_amount"] == "14.71"  # 12.50 / 0.85 = 14.7058…
    assert body["fx"] == {
        "rate": "0.8500",
        "settlement_rate": None,
        "date": today().isoformat(),
        "source": "override",
    }


# --- The drop-in endpoint ------------------------------------------------------------------


def dropin(shop: Any, **overrides: str) -> Any:
    fields = {
        "partner": shop.merchant.public_id,
        "partner_key": shop.key,
        "customer": "c-1",
        "order_id": "D-1",
        "address": ADDRESS,
        "currency": "GBP",
        "currency_amount": "12.50",
    } | overrides
    return Client().post("/new_purchase", fields)


def test_a_gbp_purchase_through_the_drop_in_is_converted_the_same_way(
    shop: Any, upstream: Any, rates: Any
) -> None:
    response = dropin(shop)

    assert response.status_code == 200
    assert response.json()["result"] == "ok"
    fields = sent_upstream(upstream, "D-1")
    assert (fields["currency"], fields["currency_amount"]) == ("EUR", "14.99")
    p = Purchase.objects.get()
    assert (p.original_currency, p.original_amount_minor, p.amount_minor) == ("GBP", 1250, 1499)


def test_a_stale_rate_through_the_drop_in_is_an_error_naming_the_currency(
    shop: Any, upstream: Any
) -> None:
    Rate.objects.create(currency="GBP", date=today() - timedelta(days=9), rate="0.8338")

    response = dropin(shop)

    assert response.status_code == 200
    assert response.json() == {
        "result": "error",
        "error": f"currency: no current reference rate for GBP: the newest is of "
        f"{today() - timedelta(days=9)}, and rates older than 4 days are not used.",
    }
    assert Purchase.objects.count() == 0


# --- update_rates --------------------------------------------------------------------------


def test_update_rates_loads_a_local_file_and_adds_only_new_rates(db: None, tmp_path: Path) -> None:
    path = tmp_path / "eurofxref.zip"
    path.write_bytes(zipped(ecb_csv({date(2026, 11, 27): "1.0500,160.00,0.8400,0.9300"})))
    before = Rate.objects.count()
    out = io.StringIO()

    call_command("update_rates", file=str(path), stdout=out)

    assert out.getvalue() == "read 4 rates, added 4; newest 2026-11-27\n"
    assert Rate.objects.count() == before + 4
    gbp = Rate.objects.get(currency="GBP", date=date(2026, 11, 27))
    assert (gbp.rate, gbp.source, gbp.value) == ("0.8400", "ECB", Decimal("0.8400"))

    out = io.StringIO()
    call_command("update_rates", file=str(path), stdout=out)
    assert out.getvalue() == "read 4 rates, added 0; newest 2026-11-27\n"


def test_update_rates_reads_the_daily_file_format(db: None, tmp_path: Path) -> None:
    # The ECB's daily eurofxref.csv: spaces after commas and a long date.
    path = tmp_path / "eurofxref.csv"
    path.write_text("Date, USD, JPY, GBP, \n27 November 2026, 1.0500, 160.00, 0.84000, \n")

    call_command("update_rates", file=str(path), stdout=io.StringIO())

    assert Rate.objects.get(currency="GBP", date=date(2026, 11, 27)).rate == "0.84000"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not an ECB rates file: the file is empty"),
        (b"hello,world\n", "not an ECB rates file: the first column must be Date"),
        (b"Date,GBP,\n2026-11-27,abc,\n", "not an ECB rates file: GBP on 2026-11-27: 'abc'"),
        (b"Date,GBP,\n2026-11-27,-1,\n", "is not a positive rate"),
        (b"PK\x03\x04junk", "not an ECB rates file: not a valid zip file"),
    ],
)
def test_update_rates_refuses_a_file_that_is_not_the_ecb_format(
    db: None, tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "rates"
    path.write_bytes(content)
    before = Rate.objects.count()

    with pytest.raises(CommandError, match=message.replace("(", r"\(")):
        call_command("update_rates", file=str(path), stdout=io.StringIO())
    assert Rate.objects.count() == before


def test_update_rates_reports_an_http_error(rates_server: RatesServer, db: None) -> None:
    rates_server.status = 503

    with pytest.raises(CommandError, match=r"answered HTTP 503"):
        call_command("update_rates", url=rates_server.url, stdout=io.StringIO())
    assert rates_server.requests == 1


def test_the_bundled_history_is_parsed_as_published_text(db: None) -> None:
    raw = fx.bundled_history_path().read_bytes()
    rates = fx.parse_rates(raw, since=date(2026, 10, 30))
    by_currency = {c: r for c, _, r in rates}
    # Exactly the ECB's text, e.g. trailing zeros dropped as the history file writes them.
    assert by_currency["GBP"] == "0.8338"
    assert by_currency["JPY"] == "175.68"
    assert "CYP" not in by_currency  # withdrawn currencies are not loaded
    # The migration loaded the last year of it.
    assert Rate.objects.filter(currency="GBP", date=date(2026, 10, 30), rate="0.8338").exists()


def test_a_replay_once_the_rate_is_stale_still_returns_the_stored_purchase(
    shop: Any, upstream: Any, settings: Any
) -> None:
    Rate.objects.create(currency="GBP", date=today(), rate="0.8338")
    assert shop.post_purchase(currency="GBP", currency_amount="12.50").status_code == 201
    Rate.objects.all().delete()  # as if days passed without a published rate

    again = shop.post_purchase(currency="GBP", currency_amount="12.50")

    assert again.status_code == 200
    assert again.json()["settlement_amount"] == "14.99"
    other = shop.post_purchase(order_id="A-2", currency="GBP", currency_amount="12.50")
    assert other.status_code == 400
    assert upstream.state.requests == 1


# --- Reports -------------------------------------------------------------------------------


def report_rows(report: str) -> list[list[str]]:
    period = Period(today(), today(), ZoneInfo("UTC"))
    text = "".join(reports.csv_chunks(report, ReportFilter(period)))
    return list(csv.reader(io.StringIO(text)))[1:]


def test_reports_show_both_amounts_and_add_up_per_settlement_and_original_currency(
    shop: Any, upstream: Any, rates: Any
) -> None:
    shop.post_purchase(order_id="G-1", currency="GBP", currency_amount="12.50")
    shop.post_purchase(order_id="G-2", currency="GBP", currency_amount="1.00")  # 1.1993… → 1.20
    shop.post_purchase(order_id="E-1", currency="EUR", currency_amount="2.00")

    header, *rows = report_rows("detail")
    picked = [
        {name: row[header.index(name)] for name in DETAIL_FX}
        for row in sorted(rows, key=lambda r: r[header.index("order_id")])
    ]
    assert picked == [
        {"order_id": "E-1", "currency": "EUR", "amount": "2.00", "original_currency": "EUR",
         "original_amount": "2.00", "fx_rate": "", "fx_rate_date": "", "fx_rate_source": ""},
        {"order_id": "G-1", "currency": "EUR", "amount": "14.99", "original_currency": "GBP",
         "original_amount": "12.50", "fx_rate": "0.8338", "fx_rate_date": today().isoformat(),
         "fx_rate_source": "ECB"},
        {"order_id": "G-2", "currency": "EUR", "amount": "1.20", "original_currency": "GBP",
         "original_amount": "1.00", "fx_rate": "0.8338", "fx_rate_date": today().isoformat(),
         "fx_rate_source": "ECB"},
    ]  # fmt: skip

    header, *rows = report_rows("summary")
    picked = [{name: row[header.index(name)] for name in SUMMARY_FX} for row in rows]
    assert picked == [
        {"currency": "EUR", "original_currency": "EUR", "purchases": "1", "volume": "2.00",
         "original_volume": "2.00"},
        {"currency": "EUR", "original_currency": "GBP", "purchases": "2", "volume": "16.19",
         "original_volume": "13.50"},
    ]  # fmt: skip


DETAIL_FX = [
    "order_id",
    "currency",
    "amount",
    "original_currency",
    "original_amount",
    "fx_rate",
    "fx_rate_date",
    "fx_rate_source",
]
SUMMARY_FX = ["currency", "original_currency", "purchases", "volume", "original_volume"]


def test_the_dashboard_shows_converted_purchases_per_settlement_and_sent_currency(
    shop: Any, upstream: Any, rates: Any, django_user_model: Any, settings: Any
) -> None:
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    shop.post_purchase(order_id="G-1", currency="GBP", currency_amount="12.50")
    shop.post_purchase(order_id="G-2", currency="GBP", currency_amount="1.00")
    shop.post_purchase(order_id="E-1", currency="EUR", currency_amount="2.00")
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-1")
    client = Client()
    client.force_login(admin)
    day = today().isoformat()

    response = client.get(
        "/admin/payouts/", {"period": "custom", "start": day, "end": day, "tz": "UTC"}
    )

    assert response.status_code == 200
    board = response.context["board"]
    assert board.conversions == [("EUR", "GBP", 2, Decimal("13.50"), Decimal("16.19"))]
    page = response.content.decode()
    assert '<tr data-conversion="GBP-EUR">' in page
    assert "13.50 GBP" in page and "16.19 EUR" in page


def test_the_openapi_schema_documents_both_amounts_and_the_rates(db: None) -> None:
    response = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    schemas = response.json()["components"]["schemas"]

    purchase = schemas["Purchase"]["properties"]
    assert purchase["currency"]["description"] == "The currency the merchant sent."
    assert "settlement currency" in purchase["settlement_currency"]["description"]
    assert purchase["settlement_amount"]["format"] == "decimal"
    assert purchase["fx"]["nullable"] is True
    assert set(schemas["Fx"]["properties"]) == {"rate", "settlement_rate", "date", "source"}
    request = schemas["PurchaseRequestRequest"]["properties"]["currency"]
    assert "ISO 4217" in request["description"]
