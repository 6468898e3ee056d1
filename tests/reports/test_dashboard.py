"""The payouts dashboard and the report downloads in admin: figures, roles, queries, files."""

from __future__ import annotations

import csv
import html as html_lib
import io
import re
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from openpyxl import load_workbook

from cashback.models import Status
from merchants.models import Balance, Merchant
from tests.reports.conftest import PASSWORD, DataSet, berlin, make_purchase
from tests.reports.test_reports import DETAIL_CSV, SUMMARY_CSV

DASHBOARD = "/admin/payouts/"
OCTOBER = {"period": "custom", "start": "2026-10-01", "end": "2026-10-31", "tz": "Europe/Berlin"}


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_dashboard_shows_exact_figures_per_merchant_and_totals(
    dataset: DataSet, accountant: Any
) -> None:
    response = logged_in(accountant).get(DASHBOARD, OCTOBER)

    assert response.status_code == 200
    board = response.context["board"]
    alpha, beta = board.rows
    assert (alpha.merchant, beta.merchant) == (dataset.alpha, dataset.beta)
    counts = ("purchases", "sent", "rejected", "pending_unknown", "queued_sending", "failed")
    assert [getattr(alpha.figures, c) for c in counts] == [4, 2, 1, 1, 0, 0]
    assert [getattr(beta.figures, c) for c in counts] == [5, 2, 0, 1, 1, 1]
    assert [getattr(board.totals, c) for c in counts] == [9, 4, 1, 2, 1, 1]
    assert alpha.figures.cashback_gbyte == Decimal("2.000101318")
    assert beta.figures.cashback_gbyte == Decimal("0.000500300")
    assert board.totals.cashback_gbyte == Decimal("2.000601618")
    assert alpha.figures.volume_amounts() == [
        ("USD", Decimal("100.00")),
        ("EUR", Decimal("19.50")),
        ("GBYTE", Decimal("1.500000000")),
    ]
    assert beta.figures.volume_amounts() == [
        ("EUR", Decimal("36.00")),
        ("BTC", Decimal("0.00010000")),
    ]
    assert board.totals.volume_amounts() == [
        ("USD", Decimal("100.00")),
        ("EUR", Decimal("55.50")),
        ("GBYTE", Decimal("1.500000000")),
        ("BTC", Decimal("0.00010000")),
    ]
    assert alpha.figures.funded_amounts() == [
        ("USD", Decimal("10.00")),
        ("EUR", Decimal("0.63")),
        ("GBYTE", Decimal("0")),
    ]
    assert board.totals.funded_amounts() == [
        ("USD", Decimal("10.00")),
        ("EUR", Decimal("1.03")),
        ("GBYTE", Decimal("0")),
        ("BTC", Decimal("0")),
    ]
    # Current balances, whatever the period; gamma has no purchases in October: no row.
    assert alpha.balance_amounts() == [
        ("USD", Decimal("50.00"), Decimal("0.00")),
        ("EUR", Decimal("10.00"), Decimal("0.00")),
    ]
    assert beta.balance_amounts() == [("EUR", Decimal("2.50"), Decimal("1.50"))]
    assert board.total_balance_amounts() == [
        ("USD", Decimal("50.00"), Decimal("0.00")),
        ("EUR", Decimal("12.50"), Decimal("1.50")),
    ]
    # The chart: one bar per day of October, cashback bytes by creation day.
    assert board.chart_unit == "day" and len(board.chart) == 31
    assert {d: v for d, v in board.chart if v} == {
        date(2026, 10, 1): 101318,
        date(2026, 10, 2): 300,
        date(2026, 10, 15): 2_000_000_000,
        date(2026, 10, 26): 500_000,
    }


def cells(html: str, merchant: str) -> dict[str, str]:
    """Return the figure cells of one table row, tags stripped and whitespace collapsed."""
    row = re.search(rf'<tr data-merchant="{merchant}">(.*?)</tr>', html, re.S)
    assert row is not None, merchant
    found = re.findall(r'<td class="num" data-col="(\w+)">(.*?)</td>', row.group(1), re.S)
    return {k: " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", v)).split()) for k, v in found}


def test_dashboard_page_renders_the_figures_chart_and_export_links(
    dataset: DataSet, accountant: Any
) -> None:
    html = logged_in(accountant).get(DASHBOARD, OCTOBER).content.decode()

    assert cells(html, "alpha") == {
        "purchases": "4",
        "sent": "2",
        "rejected": "1",
        "pending_unknown": "1",
        "queued_sending": "0",
        "failed": "0",
        "cashback_gbyte": "2.000101318",
        "volume": "100.00 USD 19.50 EUR 1.500000000 GBYTE",
        "funded": "10.00 USD 0.63 EUR 0.000000000 GBYTE",
        "balance": "50.00 / 0.00 USD 10.00 / 0.00 EUR",
    }
    assert cells(html, "")["cashback_gbyte"] == "2.000601618"
    assert cells(html, "")["balance"] == "50.00 / 0.00 USD 12.50 / 1.50 EUR"
    assert 'data-merchant="gamma"' not in html
    assert "2026-10-01 to 2026-10-31, both inclusive, in Europe/Berlin" in html
    # The tallest bar is Oct 15: slot 14 of 31 slots of (960 - 96 - 12) // 31 = 27 units; the
    # axis tops at 2 GBYTE (a 1, 2, 5 step), so the bar is the whole 190-unit plot.
    assert "<title>2026-10-15: 2.000000000 GBYTE; alpha 2.000000000</title>" in html
    assert '<rect class="bar series-0" x="475" y="30" width="25" height="190"/>' in html
    assert "<title>2026-10-01: 0.000101318 GBYTE; alpha 0.000101318</title>" in html
    # Axes with labels, a legend, and the previous period as a line.
    assert ">2.000000000</text>" in html and ">0.500000000</text>" in html
    assert "day of creation (Europe/Berlin)" in html
    # The previous period has as many days (31) and ends the day before October.
    assert 'id="chart-legend"' in html
    assert "previous period (2026-08-31 to 2026-09-30 (Europe/Berlin))" in html
    assert '<polyline class="previous" points="' in html
    # Counts link to the purchases they count.
    assert (
        'href="/admin/cashback/purchase/?created_at__gte=2026-10-01T00%3A00%3A00%2B02%3A00'
        "&amp;created_at__lt=2026-11-01T00%3A00%3A00%2B01%3A00"
        f'&amp;merchant__id__exact={dataset.alpha.pk}&amp;status__exact=sent">2</a>'
    ) in html
    query = "period=custom&amp;tz=Europe%2FBerlin&amp;start=2026-10-01&amp;end=2026-10-31"
    for report in ("detail", "summary"):
        for fmt in ("csv", "xlsx"):
            assert f'href="/admin/payouts/export/{report}.{fmt}?{query}"' in html
    # No script and no outside asset: the page works under the admin's CSP.
    assert "<script" not in html.split('id="content-main" class="payouts"')[1]
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "").replace("http://x", "")


def test_dashboard_for_one_merchant_shows_it_even_without_purchases(
    dataset: DataSet, accountant: Any
) -> None:
    response = logged_in(accountant).get(DASHBOARD, {**OCTOBER, "merchant": "gamma"})

    board = response.context["board"]
    assert [r.merchant.public_id for r in board.rows] == ["gamma"]
    assert board.rows[0].figures.purchases == 0
    assert board.total_balance_amounts() == [("EUR", Decimal("9.99"), Decimal("0.00"))]


def test_dashboard_chart_shows_months_for_a_long_period(dataset: DataSet, accountant: Any) -> None:
    params = {**OCTOBER, "start": "2026-01-15", "end": "2026-12-31"}

    board = logged_in(accountant).get(DASHBOARD, params).context["board"]

    assert board.chart_unit == "month"
    assert board.chart[0] == (date(2026, 1, 1), 0)
    assert dict(board.chart)[date(2026, 10, 1)] == 2_000_601_618
    assert dict(board.chart)[date(2026, 11, 1)] == 7
    assert len(board.chart) == 12


def test_dashboard_defaults_to_this_month_in_the_server_zone(
    accountant: Any, settings: Any
) -> None:
    settings.TIME_ZONE = "Asia/Tokyo"

    selection = logged_in(accountant).get(DASHBOARD).context["selection"]

    assert selection.preset == "this_month"
    assert selection.filter.period.zone == "Asia/Tokyo"
    assert selection.filter.period.start.day == 1


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"period": "custom", "start": "2026-10-32"}, "Start date: &#x27;2026-10-32&#x27; is not a date as YYYY-MM-DD."),
        ({"period": "custom", "start": "2026-10-02", "end": "2026-10-01"}, "The end date is before the start date."),
        ({"period": "last_month", "tz": "Nowhere/City"}, "Unknown time zone &#x27;Nowhere/City&#x27;; use an IANA name like Europe/Berlin."),
        ({"period": "last_month", "merchant": "nobody"}, "No merchant with public id &#x27;nobody&#x27;."),
        ({"period": "<script>"}, "Unknown period &#x27;&lt;script&gt;&#x27;"),
    ],
)  # fmt: skip
def test_dashboard_answers_bad_filters_with_400_and_a_message(
    accountant: Any, params: dict[str, str], message: str
) -> None:
    response = logged_in(accountant).get(DASHBOARD, params)

    assert response.status_code == 400
    assert message in response.content.decode()


def test_export_answers_bad_filters_with_400_json(accountant: Any) -> None:
    client = logged_in(accountant)

    response = client.get("/admin/payouts/export/detail.csv", {"period": "custom", "start": "x"})
    assert response.status_code == 400
    assert response.json() == {"detail": "Start date: 'x' is not a date as YYYY-MM-DD."}
    response = client.get("/admin/payouts/export/ledger.csv", {"period": "today"})
    assert response.status_code == 404
    assert response.json() == {"detail": "Unknown report or format."}


def download(client: Client, report: str, fmt: str, params: dict[str, str]) -> Any:
    return client.get(f"/admin/payouts/export/{report}.{fmt}", params)


def test_accountant_downloads_detail_csv_streamed(dataset: DataSet, accountant: Any) -> None:
    response = download(logged_in(accountant), "detail", "csv", OCTOBER)

    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == (
        'attachment; filename="payouts-detail_2026-10-01_2026-10-31_Europe-Berlin.csv"'
    )
    assert response["Cache-Control"] == "private, no-store, max-age=0, no-cache, must-revalidate"
    body = b"".join(response.streaming_content)
    # A UTF-8 byte order mark first, for Excel; then the title on line 1, the header on 2.
    assert body.startswith(b"\xef\xbb\xbfPayout detail report,") or body.startswith(
        b'\xef\xbb\xbf"Payout detail report,'
    )
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert rows[2:] == DETAIL_CSV
    plain = download(logged_in(accountant), "detail", "csv", {**OCTOBER, "bom": "0"})
    assert b"".join(plain.streaming_content) == body[3:]


def test_accountant_downloads_summary_xlsx(dataset: DataSet, accountant: Any) -> None:
    response = download(logged_in(accountant), "summary", "xlsx", OCTOBER)

    assert response.status_code == 200
    assert response["Content-Disposition"] == (
        'attachment; filename="payouts-summary_2026-10-01_2026-10-31_Europe-Berlin.xlsx"'
    )
    book = load_workbook(io.BytesIO(b"".join(response.streaming_content)))
    rows = list(book["summary 1"].iter_rows(values_only=True))
    assert [r[:3] for r in rows[2 : 2 + len(SUMMARY_CSV)]] == [tuple(r[:3]) for r in SUMMARY_CSV]
    assert rows[-1][0] == "Grand total, all currencies"


def test_command_writes_the_same_csv_as_the_admin_download(
    dataset: DataSet, accountant: Any
) -> None:
    for report in ("detail", "summary"):
        admin_csv = b"".join(
            download(logged_in(accountant), report, "csv", OCTOBER).streaming_content
        )
        out = io.StringIO()
        call_command(
            "export_payouts",
            "--start=2026-10-01",
            "--end=2026-10-31",
            "--tz=Europe/Berlin",
            f"--report={report}",
            "--bom",
            stdout=out,
        )
        assert out.getvalue() == admin_csv.decode()


def test_command_writes_files_for_one_merchant(dataset: DataSet, tmp_path: Any) -> None:
    args = ["--start=2026-10-01", "--end=2026-10-31", "--tz=Europe/Berlin", "--merchant=alpha"]

    call_command("export_payouts", *args, f"--output={tmp_path / 'a.csv'}")
    call_command("export_payouts", *args, "--format=xlsx", f"--output={tmp_path / 'a.xlsx'}")

    with open(tmp_path / "a.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[2:] == [r for r in DETAIL_CSV if r[2] == "alpha"]
    book = load_workbook(tmp_path / "a.xlsx")
    # The rows, then a blank row and the totals.
    data_rows = list(book["detail 1"].iter_rows(values_only=True))[2:]
    assert [r[4] for r in data_rows[: data_rows.index((None,) * len(data_rows[0]))]] == [
        "a-1",
        "a-2",
        "a-3",
        "a-4",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start=2026-10-01", "--end=2026-09-01"], "The end date is before the start date."),
        (["--start=01.10.2026", "--end=2026-10-31"], "--start: '01.10.2026' is not a date as YYYY-MM-DD."),
        (["--start=2026-10-01", "--end=2026-10-31", "--tz=Berlin"], "Unknown time zone 'Berlin'; use an IANA name like Europe/Berlin."),
        (["--start=2026-10-01", "--end=2026-10-31", "--merchant=zeta"], "No merchant with public id 'zeta'."),
    ],
)  # fmt: skip
@pytest.mark.django_db
def test_command_refuses_bad_arguments_with_a_clear_error(args: list[str], message: str) -> None:
    with pytest.raises(CommandError) as excinfo:
        call_command("export_payouts", *args, stdout=io.StringIO())
    assert str(excinfo.value) == message


# --- Roles ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", [DASHBOARD, "/admin/payouts/export/detail.csv", "/admin/payouts/export/summary.xlsx"]
)
def test_staff_without_the_permission_gets_403(staff_without_permission: Any, url: str) -> None:
    assert logged_in(staff_without_permission).get(url).status_code == 403


@pytest.mark.parametrize("url", [DASHBOARD, "/admin/payouts/export/detail.csv"])
def test_non_staff_and_anonymous_users_are_sent_to_the_admin_login(
    customer_user: Any, url: str
) -> None:
    for client in (logged_in(customer_user), Client()):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"] == f"/admin/login/?next={url}"


def test_superuser_may_open_the_dashboard(dataset: DataSet, django_user_model: Any) -> None:
    admin_user = django_user_model.objects.create_superuser("root", password=PASSWORD)

    assert logged_in(admin_user).get(DASHBOARD, OCTOBER).status_code == 200


def test_admin_index_links_the_dashboard_for_those_who_may_see_it(
    accountant: Any, staff_without_permission: Any
) -> None:
    link = '<a href="/admin/payouts/">Payouts dashboard</a>'

    assert link in logged_in(accountant).get("/admin/").content.decode()
    assert link not in logged_in(staff_without_permission).get("/admin/").content.decode()


def test_accountant_cannot_change_merchants_or_purchases(dataset: DataSet, accountant: Any) -> None:
    client = logged_in(accountant)

    assert client.get("/admin/merchants/merchant/").status_code == 200
    assert client.get("/admin/merchants/merchant/add/").status_code == 403
    response = client.post(f"/admin/merchants/merchant/{dataset.alpha.pk}/change/", {"name": "x"})
    assert response.status_code == 403
    assert client.post(f"/admin/merchants/merchant/{dataset.alpha.pk}/delete/").status_code == 403
    assert Merchant.objects.get(pk=dataset.alpha.pk).name == "Alpha Shop"


# --- Queries --------------------------------------------------------------------------------


def add_merchants(start: int, count: int) -> None:
    for n in range(start, start + count):
        merchant = Merchant.objects.create(public_id=f"m-{n:03}", name=f"Merchant {n:03}")
        make_purchase(
            merchant, "o-1", "EUR", 100, berlin(2026, 10, 3), status=Status.SENT, cashback=5
        )
        make_purchase(merchant, "o-2", "USD", 200, berlin(2026, 10, 4), status=Status.PENDING)
        Balance.objects.create(merchant=merchant, currency="EUR", available_minor=n)


def test_dashboard_queries_do_not_grow_with_the_number_of_merchants(
    accountant: Any, django_assert_max_num_queries: Any
) -> None:
    client = logged_in(accountant)
    add_merchants(0, 3)
    with CaptureQueriesContext(connection) as few:
        assert len(client.get(DASHBOARD, OCTOBER).context["board"].rows) == 3

    add_merchants(3, 27)
    with django_assert_max_num_queries(len(few.captured_queries)):
        board = client.get(DASHBOARD, OCTOBER).context["board"]
    assert len(board.rows) == 30
    assert board.totals.purchases == 60
    # Session, user, permissions (user's and group's), the merchant menu, one purchase
    # aggregate, balances, the chart's stacks and previous period, the converted purchases'
    # sums, and the banners' worker heartbeat and alerts.
    assert len(few.captured_queries) <= 12


@pytest.mark.django_db
def test_command_refuses_xlsx_to_a_text_only_stdout() -> None:
    with pytest.raises(CommandError) as excinfo:
        call_command(
            "export_payouts",
            "--start=2026-10-01",
            "--end=2026-10-31",
            "--format=xlsx",
            stdout=io.StringIO(),
        )
    assert str(excinfo.value) == "XLSX is binary and stdout takes text here: give --output FILE."


def test_the_dashboards_links_open_the_purchases_it_counts(
    dataset: DataSet, accountant: Any
) -> None:
    client = logged_in(accountant)
    response = client.get(DASHBOARD, OCTOBER)
    board = response.context["board"]

    for row in board.rows:
        for column, url in row.links.items():
            listing = client.get(url)
            assert listing.status_code == 200, url
            expected = getattr(row.figures, column)
            assert listing.context["cl"].result_count == expected, (row.merchant, column)
    total = response.context["total_links"]["purchases"]
    assert client.get(total).context["cl"].result_count == board.totals.purchases


def test_the_chart_has_an_empty_state_and_stacks_the_merchants_that_paid_most(
    accountant: Any,
) -> None:
    client = logged_in(accountant)
    empty = client.get(DASHBOARD, {"period": "custom", "start": "2020-01-01", "end": "2020-01-31"})
    assert 'id="chart-empty"' in empty.content.decode()
    assert "<polyline" not in empty.content.decode()

    day = berlin(2026, 10, 3, 12)
    for n in range(7):
        shop = Merchant.objects.create(public_id=f"m{n}", name=f"Shop {n}")
        make_purchase(shop, f"o{n}", "EUR", 100, day, status=Status.SENT, cashback=(n + 1) * 1000)
    board = client.get(DASHBOARD, OCTOBER).context["board"]

    names = [m.public_id if m else None for m, _ in board.stacks]
    assert names == ["m6", "m5", "m4", "m3", "m2", None]
    third = [d for d, _ in board.chart].index(date(2026, 10, 3))
    assert [values[third] for _, values in board.stacks] == [7000, 6000, 5000, 4000, 3000, 3000]
    assert sum(values[third] for _, values in board.stacks) == dict(board.chart)[date(2026, 10, 3)]
