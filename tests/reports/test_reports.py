"""Report rows, CSV and XLSX files, periods and time zones, on the hand-built data set."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openpyxl import load_workbook
from openpyxl.utils import get_column_letter

from cashback import reports
from cashback.reports import Period, ReportError, ReportFilter, columns, xlsxfile
from cashback.reports.csvfile import general_csv_rows
from gateway.money import PRECISION, format_minor, from_minor
from tests.reports.conftest import BERLIN, UNIT_1, UNIT_2, UNIT_3, DataSet

OCTOBER = Period(date(2026, 10, 1), date(2026, 10, 31), BERLIN)

DETAIL_HEADER = [
    "created_at",
    "sent_at",
    "merchant_id",
    "merchant_name",
    "order_id",
    "customer",
    "status",
    "currency",
    "amount",
    "requested_percentage",
    "applied_percentage",
    "partner_funded",
    "cashback_bytes",
    "cashback_gbyte",
    "unit",
    "error",
    "original_currency",
    "original_amount",
    "fx_rate",
    "fx_settlement_rate",
    "fx_rate_date",
    "fx_rate_source",
]

# The CSV rows of October in Berlin, oldest first; text cells that a spreadsheet would run as
# a formula carry a leading quote.
_DETAIL_CSV = [
    ["2026-10-01T00:00:00+02:00", "2026-10-01T00:00:01+02:00", "alpha", "Alpha Shop", "a-1", "c-1", "sent", "EUR", "12.50", "5.00", "5.00", "0.63", "101318", "0.000101318", UNIT_1, ""],
    ["2026-10-02T10:00:00+02:00", "2026-10-02T10:00:02+02:00", "beta", "Beta Store", "b-5", "c-5", "sent", "EUR", "10.00", "5.00", "0.00", "0.00", "300", "0.000000300", "'+" + "A" * 42 + "=", ""],
    ["2026-10-05T12:00:00+02:00", "", "beta", "Beta Store", "b-3", "c-3", "failed", "BTC", "0.00010000", "0.00", "0.00", "0.00000000", "", "", "", "retries ran out"],
    ["2026-10-10T10:00:00+02:00", "", "beta", "Beta Store", "b-2", "'@bob", "unknown", "EUR", "5.00", "0.00", "0.00", "0.00", "", "", "", ""],
    ["2026-10-15T12:00:00+02:00", "2026-10-15T12:00:01+02:00", "alpha", "Alpha Shop", "a-2", "c-2", "sent", "USD", "100.00", "10.00", "10.00", "10.00", "2000000000", "2.000000000", UNIT_2, ""],
    ["2026-10-20T08:30:00+02:00", "", "alpha", "Alpha Shop", "a-3", "c-1", "rejected", "EUR", "7.00", "5.00", "5.00", "0.00", "", "", "", "'=HYPERLINK(\"http://x\")"],
    ["2026-10-26T09:00:00+01:00", "2026-10-26T09:00:05+01:00", "beta", "Beta Store", "b-1", "c-4", "sent", "EUR", "20.00", "2.00", "2.00", "0.40", "500000", "0.000500000", UNIT_3, ""],
    ["2026-10-31T23:59:59+01:00", "", "alpha", "Alpha Shop", "a-4", "'+4412345", "pending", "GBYTE", "1.500000000", "0.00", "0.00", "0.000000000", "", "", "", ""],
    ["2026-10-31T23:59:59.999999+01:00", "", "beta", "Beta Store", "b-4", "c-6", "queued", "EUR", "1.00", "0.00", "0.00", "0.00", "", "", "", ""],
]  # fmt: skip

# None of them was converted: what the merchant sent is what went upstream.
DETAIL_CSV = [[*row, row[7], row[8], "", "", "", ""] for row in _DETAIL_CSV]

SUMMARY_HEADER = [
    "merchant_id",
    "merchant_name",
    "currency",
    "purchases",
    "sent",
    "rejected",
    "pending_unknown",
    "queued_sending",
    "failed",
    "volume",
    "sent_volume",
    "partner_funded",
    "cashback_bytes",
    "cashback_gbyte",
    "original_currency",
    "original_volume",
    "original_sent_volume",
]

_SUMMARY_CSV = [
    ["alpha", "Alpha Shop", "EUR", "2", "1", "1", "0", "0", "0", "19.50", "12.50", "0.63", "101318", "0.000101318"],
    ["alpha", "Alpha Shop", "GBYTE", "1", "0", "0", "1", "0", "0", "1.500000000", "0.000000000", "0.000000000", "0", "0.000000000"],
    ["alpha", "Alpha Shop", "USD", "1", "1", "0", "0", "0", "0", "100.00", "100.00", "10.00", "2000000000", "2.000000000"],
    ["beta", "Beta Store", "BTC", "1", "0", "0", "0", "0", "1", "0.00010000", "0.00000000", "0.00000000", "0", "0.000000000"],
    ["beta", "Beta Store", "EUR", "4", "2", "0", "1", "1", "0", "36.00", "30.00", "0.40", "500300", "0.000500300"],
]  # fmt: skip

SUMMARY_CSV = [[*row, row[2], row[9], row[10]] for row in _SUMMARY_CSV]

NUMERIC_DETAIL = {"original_amount", "amount", "requested_percentage", "applied_percentage", "partner_funded", "cashback_bytes", "cashback_gbyte"}  # fmt: skip
TEXT_SUMMARY = {"merchant_id", "merchant_name", "currency", "original_currency"}


def csv_text(report: str, flt: ReportFilter) -> str:
    return "".join(reports.csv_chunks(report, flt))


def test_detail_csv_has_a_title_line_the_columns_and_every_purchase_of_the_period(
    dataset: DataSet,
) -> None:
    text = csv_text("detail", ReportFilter(OCTOBER))

    lines = text.split("\r\n")
    assert (
        lines[0]
        == '"Payout detail report, 2026-10-01 to 2026-10-31 (Europe/Berlin), all merchants"'
    )
    assert lines[1] == ",".join(DETAIL_HEADER)
    # The formula in the error column is quoted for CSV and escaped for spreadsheets.
    assert lines[7].endswith(',"\'=HYPERLINK(""http://x"")",EUR,7.00,,,,')
    assert list(csv.reader(io.StringIO(text)))[2:] == DETAIL_CSV
    assert text.endswith("\r\n") and len(lines) == 2 + len(DETAIL_CSV) + 1


def test_summary_csv_has_one_row_per_merchant_and_currency(dataset: DataSet) -> None:
    rows = list(csv.reader(io.StringIO(csv_text("summary", ReportFilter(OCTOBER)))))

    assert rows[0] == [
        "Payout summary report, 2026-10-01 to 2026-10-31 (Europe/Berlin), all merchants"
    ]
    assert rows[1] == SUMMARY_HEADER
    assert rows[2:] == SUMMARY_CSV


def test_report_for_one_merchant_has_only_its_rows(dataset: DataSet) -> None:
    flt = ReportFilter(OCTOBER, dataset.beta)

    rows = list(csv.reader(io.StringIO(csv_text("detail", flt))))

    assert rows[0] == [
        "Payout detail report, 2026-10-01 to 2026-10-31 (Europe/Berlin), merchant beta"
    ]
    assert rows[2:] == [r for r in DETAIL_CSV if r[2] == "beta"]
    assert (
        flt.filename("detail", "csv")
        == "payouts-detail_2026-10-01_2026-10-31_Europe-Berlin_beta.csv"
    )


def test_sums_of_the_detail_rows_equal_the_summary(dataset: DataSet) -> None:
    detail = list(reports.detail_rows(ReportFilter(OCTOBER)))
    funded: dict[str, Decimal] = {}
    for row in detail:
        funded[row[7]] = funded.get(row[7], Decimal(0)) + row[11]

    summary: dict[str, Decimal] = {}
    for row in reports.summary_rows(ReportFilter(OCTOBER)):
        summary[row[2]] = summary.get(row[2], Decimal(0)) + row[11]

    assert (
        funded
        == summary
        == {
            "EUR": Decimal("1.03"),
            "USD": Decimal("10.00"),
            "GBYTE": Decimal("0"),
            "BTC": Decimal("0"),
        }
    )


def xlsx_of(report: str, flt: ReportFilter) -> bytes:
    out = io.BytesIO()
    reports.write_xlsx(report, flt, out)
    return out.getvalue()


def expected_xlsx_row(csv_row: list[str], header: list[str], numeric: set[str]) -> list[Any]:
    """Return a CSV row as openpyxl reads the XLSX back: numbers as numbers, "" as None,
    times as date-times in the report's zone."""
    cells: list[Any] = []
    for name, value in zip(header, csv_row, strict=True):
        if value == "":
            cells.append(None)
        elif name in numeric:
            cells.append(Decimal(value))
        elif name in ("created_at", "sent_at"):
            # Excel keeps milliseconds: cut, never rounded into the next second (or day).
            moment = datetime.fromisoformat(value).replace(tzinfo=None)
            cells.append(moment.replace(microsecond=moment.microsecond // 1000 * 1000))
        else:
            cells.append(value)
    return cells


def xlsx_header(header: list[str], zone: str = "Europe/Berlin") -> list[str]:
    return [f"{h} ({zone})" if h in ("created_at", "sent_at") else h for h in header]


def as_decimal(row: tuple[Any, ...]) -> list[Any]:
    # openpyxl reads numbers as int or float; the written text has at most 15 significant
    # digits, so str() of the float gives those digits back exactly.
    return [Decimal(str(v)) if isinstance(v, int | float) else v for v in row]


def test_detail_xlsx_has_the_same_rows_with_amounts_as_numbers(dataset: DataSet) -> None:
    data = xlsx_of("detail", ReportFilter(OCTOBER))

    book = load_workbook(io.BytesIO(data))
    assert book.sheetnames == ["detail 1"]
    rows = list(book["detail 1"].iter_rows(values_only=True))
    assert (
        rows[0][0]
        == "Payout detail report, 2026-10-01 to 2026-10-31 (Europe/Berlin), all merchants"
    )
    assert list(rows[1]) == xlsx_header(DETAIL_HEADER)
    data_rows = rows[2 : 2 + len(DETAIL_CSV)]
    assert [as_decimal(r) for r in data_rows] == [
        expected_xlsx_row(r, DETAIL_HEADER, NUMERIC_DETAIL) for r in DETAIL_CSV
    ]
    # A blank row, then the totals per currency (values, not formulas).
    totals = {r[0]: r for r in rows[3 + len(DETAIL_CSV) :]}
    assert sorted(totals) == ["Total BTC", "Total EUR", "Total GBYTE", "Total USD"]
    amount, funded = DETAIL_HEADER.index("amount"), DETAIL_HEADER.index("partner_funded")
    assert (totals["Total EUR"][amount], totals["Total EUR"][funded]) == (55.5, 1.03)
    # Numbers are stored as numbers (no formula, no float noise); text stays text.
    sheet_xml = zipfile.ZipFile(io.BytesIO(data)).read("xl/worksheets/sheet1.xml").decode()
    assert re.search(r'<c r="I3" s="\d+" t="n"><v>12.5</v></c>', sheet_xml)
    assert re.search(r'<c r="N7" s="\d+" t="n"><v>2</v></c>', sheet_xml)
    assert re.search(r'<c r="N3" s="\d+" t="n"><v>0.000101318</v></c>', sheet_xml)
    assert "<f>" not in sheet_xml
    # Frozen header, an autofilter over the rows, column widths.
    assert (
        '<pane ySplit="2" topLeftCell="A3" activePane="bottomLeft" state="frozen" />' in sheet_xml
    )
    assert f'<autoFilter ref="A2:{get_column_letter(len(DETAIL_HEADER))}11" />' in sheet_xml
    assert '<col width="20" customWidth="1" min="1" max="1" />' in sheet_xml
    # Amounts carry their currency's decimals as the number format; times are date-times.
    sheet = book["detail 1"]
    assert sheet["I3"].number_format == "#,##0.00"  # 12.50 EUR
    assert sheet["I5"].number_format == "#,##0.00000000"  # 0.00010000 BTC
    assert sheet["N3"].number_format == "#,##0.000000000"
    assert sheet["A3"].number_format == "yyyy-mm-dd hh:mm:ss"
    assert sheet["A3"].value == datetime(2026, 10, 1, 0, 0)


def test_summary_xlsx_has_the_same_rows(dataset: DataSet) -> None:
    book = load_workbook(io.BytesIO(xlsx_of("summary", ReportFilter(OCTOBER))))

    rows = list(book["summary 1"].iter_rows(values_only=True))
    assert list(rows[1]) == SUMMARY_HEADER
    numeric = set(SUMMARY_HEADER) - TEXT_SUMMARY
    assert [as_decimal(r) for r in rows[2 : 2 + len(SUMMARY_CSV)]] == [
        expected_xlsx_row(r, SUMMARY_HEADER, numeric) for r in SUMMARY_CSV
    ]
    grand = rows[-1]
    assert grand[0] == "Grand total, all currencies"
    assert grand[SUMMARY_HEADER.index("purchases")] == sum(int(r[3]) for r in SUMMARY_CSV)


def test_xlsx_continues_on_new_sheets_past_the_row_limit(
    dataset: DataSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Four rows per sheet: the title, the column names and two purchases.
    monkeypatch.setattr(xlsxfile, "XLSX_MAX_ROWS", 4)

    book = load_workbook(io.BytesIO(xlsx_of("detail", ReportFilter(OCTOBER))))

    # The totals do not fit under the last two rows: they get a sheet of their own.
    assert book.sheetnames == [
        "detail 1",
        "detail 2",
        "detail 3",
        "detail 4",
        "detail 5",
        "detail totals",
    ]
    order_ids = []
    for sheet in book.worksheets[:-1]:
        rows = list(sheet.iter_rows(values_only=True))
        assert list(rows[1]) == xlsx_header(DETAIL_HEADER)
        assert 3 <= len(rows) <= 4
        order_ids += [r[4] for r in rows[2:]]
    assert order_ids == [r[4] for r in DETAIL_CSV]


def test_xlsx_of_an_empty_period_has_the_header_only(dataset: DataSet) -> None:
    flt = ReportFilter(Period(date(2020, 1, 1), date(2020, 1, 31), BERLIN))

    book = load_workbook(io.BytesIO(xlsx_of("detail", flt)))

    assert [list(r) for r in book["detail 1"].iter_rows(values_only=True)][1:] == [
        xlsx_header(DETAIL_HEADER)
    ]


def test_xlsx_keeps_numbers_a_spreadsheet_cannot_hold_exactly_as_text() -> None:
    assert xlsxfile.xlsx_cell(Decimal("123456789.123456789")) == "123456789.123456789"
    assert xlsxfile.xlsx_cell(10**16 + 1) == "10000000000000001"
    assert xlsxfile.xlsx_cell(Decimal("123456789012.345")) == Decimal("123456789012.345")
    assert xlsxfile.xlsx_cell("-1+2\x07") == "'-1+2"


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        # A control character XML cannot hold is stripped first, then the formula escaped.
        ("\x01=HYPERLINK(1)", "'=HYPERLINK(1)"),
        ("\x1b\x07+1", "'+1"),
        ("\x0b@x", "'@x"),
        # Tab, CR and LF are legal XML: they stay, and the cell is escaped.
        ("\n=1", "'\n=1"),
        ("a\x01=1", "a=1"),
    ],
)
def test_xlsx_text_is_escaped_after_control_characters_are_stripped(
    value: str, escaped: str
) -> None:
    assert xlsxfile.xlsx_cell(value) == escaped


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("=1+2", "'=1+2"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("a=1", "a=1"),
        ("", ""),
        ("'quoted", "'quoted"),
        # Some programs drop control characters on import, which would bring "=" forward.
        ("\x01=cmd", "'\x01=cmd"),
        ("\x1b+1", "'\x1b+1"),
        ("\x7f-1", "'\x7f-1"),
    ],
)
def test_text_cells_that_start_a_formula_are_escaped(value: str, escaped: str) -> None:
    assert reports.escape_text(value) == escaped


def order_ids(flt: ReportFilter) -> list[str]:
    return [row[4] for row in reports.detail_rows(flt)]


def test_a_period_includes_its_first_and_last_instant_in_its_zone(dataset: DataSet) -> None:
    ids = order_ids(ReportFilter(OCTOBER))

    # a-1 at 00:00:00 of the first day and a-4, b-4 at 23:59:59(.999999) of the last are in;
    # g-out a microsecond before and a-out at 00:00:00 of the next day are out.
    assert ids == ["a-1", "b-5", "b-3", "b-2", "a-2", "a-3", "b-1", "a-4", "b-4"]


def test_the_same_days_in_another_zone_select_other_purchases(dataset: DataSet) -> None:
    new_york = Period(date(2026, 10, 1), date(2026, 10, 31), ZoneInfo("America/New_York"))

    rows = list(reports.detail_rows(ReportFilter(new_york)))

    # a-1 (Sep 30, 18:00 in New York) and g-out drop out; a-out (Oct 31, 19:00) comes in.
    assert [r[4] for r in rows] == ["b-5", "b-3", "b-2", "a-2", "a-3", "b-1", "a-4", "b-4", "a-out"]
    assert rows[-1][0] == "2026-10-31T19:00:00-04:00"


def test_one_day_period_in_utc(dataset: DataSet) -> None:
    day = Period(date(2026, 10, 31), date(2026, 10, 31), ZoneInfo("UTC"))

    # a-4 and b-4 are 22:59:59 UTC; a-out is 23:00:00 UTC, still the 31st.
    assert order_ids(ReportFilter(day)) == ["a-4", "b-4", "a-out"]


@pytest.mark.parametrize(
    ("preset", "start", "end"),
    [
        ("today", date(2026, 11, 1), date(2026, 11, 1)),
        ("yesterday", date(2026, 10, 31), date(2026, 10, 31)),
        ("last7", date(2026, 10, 26), date(2026, 11, 1)),
        ("this_month", date(2026, 11, 1), date(2026, 11, 1)),
        ("last_month", date(2026, 10, 1), date(2026, 10, 31)),
    ],
)
def test_presets_count_days_in_the_chosen_zone(preset: str, start: date, end: date) -> None:
    # 23:30 UTC on Oct 31 is already Nov 1 in Berlin.
    now = datetime(2026, 10, 31, 23, 30, tzinfo=ZoneInfo("UTC"))

    assert reports.preset_period(preset, BERLIN, now) == Period(start, end, BERLIN)


def test_last_month_in_january_is_december_of_the_year_before() -> None:
    now = datetime(2027, 1, 15, 12, tzinfo=BERLIN)

    assert reports.preset_period("last_month", BERLIN, now) == Period(
        date(2026, 12, 1), date(2026, 12, 31), BERLIN
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: reports.parse_zone("Mars/Olympus"), "Unknown time zone 'Mars/Olympus'; use an IANA name like Europe/Berlin."),
        (lambda: reports.parse_zone("../etc/passwd"), "Unknown time zone '../etc/passwd'; use an IANA name like Europe/Berlin."),
        (lambda: reports.parse_day("2026-13-01", "Start date"), "Start date: '2026-13-01' is not a date as YYYY-MM-DD."),
        (lambda: reports.parse_day("", "End date"), "End date: enter a date as YYYY-MM-DD."),
        (lambda: reports.parse_day("9999-12-31", "End date"), "End date: the year must be between 1970 and 9998."),
        (lambda: reports.make_period(date(2026, 2, 1), date(2026, 1, 1), BERLIN), "The end date is before the start date."),
        (lambda: reports.find_merchant("nobody"), "No merchant with public id 'nobody'."),
        (lambda: reports.preset_period("fortnight", BERLIN), "Unknown period 'fortnight'; choose one of today, yesterday, last7, this_month, last_month, custom."),
    ],
)  # fmt: skip
@pytest.mark.django_db
def test_bad_parameters_raise_a_clear_report_error(call: Any, message: str) -> None:
    with pytest.raises(ReportError) as excinfo:
        call()
    assert str(excinfo.value) == message


def test_default_zone_is_the_server_time_zone(settings: Any) -> None:
    settings.TIME_ZONE = "Asia/Tokyo"

    assert reports.parse_zone("") == ZoneInfo("Asia/Tokyo")
    assert reports.parse_zone(None).key == "Asia/Tokyo"


@given(
    minor=st.integers(min_value=-(10**18), max_value=10**18),
    currency=st.sampled_from(list(PRECISION)),
)
def test_csv_amount_text_is_the_exact_decimal(minor: int, currency: str) -> None:
    assert format_minor(minor, currency) == format(from_minor(minor, currency), "f")


def stored_text(moment: datetime, postgres: bool) -> str:
    """Return a UTC time as PostgreSQL (session in UTC) or SQLite write it as text."""
    text = moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ")
    if postgres:
        if "." in text:
            text = text.rstrip("0")
        text += "+00"
    return text


@given(
    moment=st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    zone=st.sampled_from(
        [
            "Europe/Berlin",
            "Asia/Kolkata",
            "America/St_Johns",
            "Australia/Lord_Howe",
            "UTC",
            "America/Sao_Paulo",
        ]
    ),
    postgres=st.booleans(),
)
def test_local_times_from_stored_text_match_datetime(
    moment: datetime, zone: str, postgres: bool
) -> None:
    tz = ZoneInfo(zone)
    times = reports.LocalTimes(tz)

    # Twice: the second answer may come from the hour cache.
    for _ in range(2):
        assert times.iso(stored_text(moment, postgres)) == moment.astimezone(tz).isoformat()


def test_local_times_around_a_change_of_offset() -> None:
    times = reports.LocalTimes(BERLIN)

    assert times.iso("2026-10-25 00:59:59.999999+00") == "2026-10-25T02:59:59.999999+02:00"
    assert times.iso("2026-10-25 01:00:00+00") == "2026-10-25T02:00:00+01:00"
    assert times.iso("2026-10-25 01:00:00.5") == "2026-10-25T02:00:00.500000+01:00"
    assert times.iso("2026-03-29 01:00:00+00") == "2026-03-29T03:00:00+02:00"


def test_a_customer_behind_a_control_character_is_escaped_in_both_files(
    dataset: DataSet,
) -> None:
    # Stored before input validation refused control characters (or by another path).
    dataset.alpha.purchases.filter(order_id="a-1").update(customer="\x01=cmd|' /C calc'!A0")

    detail = list(csv.reader(io.StringIO(csv_text("detail", ReportFilter(OCTOBER)))))
    book = load_workbook(io.BytesIO(xlsx_of("detail", ReportFilter(OCTOBER))))
    sheet = list(book["detail 1"].iter_rows(values_only=True))

    assert detail[2][5] == "'\x01=cmd|' /C calc'!A0"
    assert sheet[2][5] == "'=cmd|' /C calc'!A0"


def test_the_fast_csv_rows_equal_the_general_rows(dataset: DataSet) -> None:
    # Every kind of cell occurs: empty times and units, escaped text, all currencies.
    dataset.beta.purchases.filter(order_id="b-3").update(error="\x07=1", unit=None)
    for period in (OCTOBER, Period(date(2026, 10, 1), date(2026, 11, 30), ZoneInfo("UTC"))):
        flt = ReportFilter(period)
        times = reports.LocalTimes(period.tz)
        fast = list(columns.csv_rows(reports.DETAIL, flt.purchases(), times))

        assert fast == list(general_csv_rows("detail", flt))
        assert len(fast) >= len(DETAIL_CSV)


def test_the_header_query_and_rows_follow_the_column_description() -> None:
    assert reports.header("detail") == DETAIL_HEADER == [c.name for c in reports.DETAIL.columns]
    assert reports.header("summary") == SUMMARY_HEADER
    # Every column reads sources the query fetches.
    for table in reports.TABLES.values():
        for column in table.columns:
            assert column.source in table.sources
            assert not column.currency or column.currency in table.sources
    assert "format_minor(amount_minor, currency)" in columns.source(reports.DETAIL, "csv")
