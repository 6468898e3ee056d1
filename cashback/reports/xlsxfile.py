"""The XLSX writer: openpyxl in write-only mode, continuing on new sheets past Excel's limit."""

from __future__ import annotations

import tempfile
from datetime import datetime
from decimal import Decimal
from typing import IO, Any

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.utils import get_column_letter

from cashback.reports.cells import Cell, escape_text, xml_text
from cashback.reports.columns import TABLES, Table, rows
from cashback.reports.periods import ReportError, ReportFilter
from cashback.reports.times import LocalTimes
from gateway.money import PRECISION, significant_digits

# Rows per XLSX sheet, the header rows included (Excel's limit); tests lower it.
XLSX_MAX_ROWS = 1_048_576
# Significant digits a spreadsheet number keeps exactly (an IEEE double holds any 15).
XLSX_EXACT_DIGITS = 15


def xlsx_cell(value: Cell) -> Cell:
    """Return one typed cell as an XLSX cell value."""
    if isinstance(value, str):
        # openpyxl refuses control characters that XML cannot hold; escaping comes last.
        return xml_text(value)
    if isinstance(value, Decimal | int) and significant_digits(Decimal(value)) > XLSX_EXACT_DIGITS:
        # A spreadsheet would silently round it: keep the exact digits as text instead.
        return format(value, "f") if isinstance(value, Decimal) else str(value)
    # Numbers: openpyxl writes them with 16 significant digits, exact up to 15.
    return value


# Number formats: amounts with their currency's decimals and thousands separators (12.50
# stays 12.50; 0.00000630 is not 6.3e-06), whole numbers with separators, real date-times.
DATETIME_FORMAT = "yyyy-mm-dd hh:mm:ss"
COUNT_FORMAT = "#,##0"
PERCENT_FORMAT = "0.00"


def amount_format(currency: str) -> str:
    places = PRECISION.get(currency, 2)
    return "#,##0." + "0" * places if places else "#,##0"


# Column widths in characters, per kind (a spreadsheet does not size them itself).
WIDTHS = {"time": 20, "text": 22, "code": 10, "amount": 18, "percent": 10, "count": 14, "gbyte": 16}


class _Sheet:
    """One sheet being written: its header, its formats, and the rows it holds so far."""

    def __init__(self, workbook: Workbook, table: Table, title: str, name: str, zone: str):
        self.table = table
        self.ws = workbook.create_sheet(name)
        for i, column in enumerate(table.columns, start=1):
            self.ws.column_dimensions[get_column_letter(i)].width = WIDTHS[column.kind]
        self.ws.freeze_panes = "A3"
        self.ws.append([title])
        # Times are local to the report's zone; the header says which.
        self.ws.append(
            [f"{c.name} ({zone})" if c.kind == "time" else c.name for c in table.columns]
        )
        self.rows = 0

    def append(self, cells: list[Any]) -> None:
        self.ws.append(cells)
        self.rows += 1

    def close(self) -> None:
        last = get_column_letter(len(self.table.columns))
        self.ws.auto_filter.ref = f"A2:{last}{2 + self.rows}"


def _typed_cells(ws: Any, table: Table, row: list[Cell], currency: str) -> list[Any]:
    cells: list[Any] = []
    for column, value in zip(table.columns, row, strict=True):
        value = xlsx_cell(value)
        if value is None or (isinstance(value, str) and column.kind != "time"):
            cells.append(value)
            continue
        cell = WriteOnlyCell(ws, value=value)
        if column.kind == "time" and isinstance(value, str):
            # A real date-time in the report's zone (the header names the zone).
            moment = datetime.fromisoformat(value).replace(tzinfo=None)
            # Excel keeps milliseconds; rounding would move 23:59:59.9999 to the next day.
            cell.value = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
            cell.number_format = DATETIME_FORMAT
        elif column.kind == "amount":
            cell.number_format = amount_format(currency)
        elif column.kind == "gbyte":
            cell.number_format = amount_format("GBYTE")
        elif column.kind == "percent":
            cell.number_format = PERCENT_FORMAT
        elif column.kind == "count":
            cell.number_format = COUNT_FORMAT
        cells.append(cell)
    return cells


def write_xlsx(report: str, flt: ReportFilter, out: IO[bytes]) -> int:
    """Write the report as an XLSX workbook to `out`; return the number of data rows.

    A sheet holds at most XLSX_MAX_ROWS rows; the rows continue on further sheets, each
    with the title and column names again. The last sheet ends with totals: one row per
    currency, and for a summary a grand total of the counts and bytes of all currencies.
    Totals are values computed exactly here, not formulas.
    """
    table = TABLES.get(report)
    if table is None:
        raise ReportError(f"Unknown report {report!r}; choose detail or summary.")
    data = rows(table, flt.purchases(), LocalTimes(flt.period.tz))
    workbook = Workbook(write_only=True)
    title = escape_text(flt.title(report))
    zone = flt.period.zone
    per_sheet = XLSX_MAX_ROWS - 2
    currency_at = table.header.index("currency")
    summed = [i for i, c in enumerate(table.columns) if c.total]
    totals: dict[str, list[Any]] = {}
    count = 0
    sheet: _Sheet | None = None
    for row in data:
        if count % per_sheet == 0:
            if sheet is not None:
                sheet.close()
            sheet = _Sheet(workbook, table, title, f"{report} {count // per_sheet + 1}", zone)
        assert sheet is not None
        currency = str(row[currency_at])
        sheet.append(_typed_cells(sheet.ws, table, row, currency))
        sums = totals.setdefault(currency, [0] * len(row))
        for i in summed:
            if row[i] is not None:
                sums[i] += row[i]
        count += 1
    if sheet is None:
        sheet = _Sheet(workbook, table, title, f"{report} 1", zone)
    sheet.close()
    grand = report == "summary"
    needed = 1 + len(totals) + (1 if grand else 0)
    if totals and 2 + sheet.rows + needed > XLSX_MAX_ROWS:
        # No room under the last rows: the totals get a sheet of their own.
        sheet = _Sheet(workbook, table, title, f"{report} totals", zone)
    _write_totals(sheet, table, totals, currency_at, summed, grand)
    workbook.save(out)
    return count


def _write_totals(
    sheet: _Sheet,
    table: Table,
    totals: dict[str, list[Any]],
    currency_at: int,
    summed: list[int],
    grand: bool,
) -> None:
    """Append a blank row, then a totals row per currency (and a grand total if asked)."""
    if not totals:
        return
    sheet.ws.append([])
    for currency in sorted(totals):
        row: list[Cell] = [None] * len(table.columns)
        row[currency_at] = currency
        for i in summed:
            row[i] = totals[currency][i]
        cells = _typed_cells(sheet.ws, table, row, currency)
        cells[0] = f"Total {currency}"
        sheet.ws.append(cells)
    if grand:
        row = [None] * len(table.columns)
        for i in summed:
            if table.columns[i].kind in ("count", "gbyte"):
                row[i] = sum(t[i] for t in totals.values())
        cells = _typed_cells(sheet.ws, table, row, "GBYTE")
        cells[0] = "Grand total, all currencies"
        sheet.ws.append(cells)


def xlsx_file(report: str, flt: ReportFilter) -> IO[bytes]:
    """Return a temporary file holding the workbook, positioned at its start."""
    out = tempfile.TemporaryFile()  # noqa: SIM115 - the response closes it
    write_xlsx(report, flt, out)
    out.seek(0)
    return out
