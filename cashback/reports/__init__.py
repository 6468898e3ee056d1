"""Payout figures and reports: the one code path behind the dashboard, the admin downloads
and the `export_payouts` command.

- `periods`: periods of calendar days in a time zone, and the filter (period, merchant);
- `figures`: the dashboard's figures and chart;
- `columns`: the one description of each report's columns (header, query, cell kinds);
- `cells`: what a cell holds and how text is escaped against spreadsheet formulas;
- `csvfile`, `xlsxfile`: the two writers; `times`: fast local ISO times.

Amounts leave the database as integer minor units and become exact `Decimal` values or
their text (gateway.money); nothing goes through float.
"""

from __future__ import annotations

from collections.abc import Iterator

from cashback.reports.cells import Cell, escape_text
from cashback.reports.columns import DETAIL, SUMMARY, TABLES, Column, Table
from cashback.reports.columns import rows as table_rows
from cashback.reports.csvfile import csv_chunks
from cashback.reports.figures import Dashboard, Figures, MerchantRow, dashboard, percent_of
from cashback.reports.periods import (
    MAX_YEAR,
    MIN_YEAR,
    PRESETS,
    Period,
    ReportError,
    ReportFilter,
    find_merchant,
    make_period,
    parse_day,
    parse_zone,
    preset_period,
)
from cashback.reports.times import LocalTimes
from cashback.reports.xlsxfile import write_xlsx, xlsx_file

REPORTS = tuple(TABLES)
FORMATS = ("csv", "xlsx")


def header(report: str) -> list[str]:
    """Return the column names of a report."""
    return TABLES[report].header


def rows(report: str, flt: ReportFilter) -> Iterator[list[Cell]]:
    """Yield the typed rows of a report: text, exact Decimal amounts, ints, None."""
    table = TABLES.get(report)
    if table is None:
        raise ReportError(f"Unknown report {report!r}; choose detail or summary.")
    return table_rows(table, flt.purchases(), LocalTimes(flt.period.tz))


def detail_rows(flt: ReportFilter) -> Iterator[list[Cell]]:
    """Yield one row per purchase, oldest first."""
    return rows("detail", flt)


def summary_rows(flt: ReportFilter) -> Iterator[list[Cell]]:
    """Yield one row per merchant and currency with purchases in the period."""
    return rows("summary", flt)


__all__ = [
    "DETAIL",
    "FORMATS",
    "MAX_YEAR",
    "MIN_YEAR",
    "PRESETS",
    "REPORTS",
    "SUMMARY",
    "TABLES",
    "Cell",
    "Column",
    "Dashboard",
    "Figures",
    "LocalTimes",
    "MerchantRow",
    "Period",
    "ReportError",
    "ReportFilter",
    "Table",
    "csv_chunks",
    "dashboard",
    "detail_rows",
    "escape_text",
    "find_merchant",
    "header",
    "make_period",
    "parse_day",
    "parse_zone",
    "percent_of",
    "preset_period",
    "rows",
    "summary_rows",
    "write_xlsx",
    "xlsx_file",
]
