"""The XLSX writer: openpyxl in write-only mode, continuing on new sheets past Excel's limit."""

from __future__ import annotations

import tempfile
from decimal import Decimal
from typing import IO

from openpyxl import Workbook

from cashback.reports.cells import Cell, escape_text, xml_text
from cashback.reports.columns import TABLES, rows
from cashback.reports.periods import ReportError, ReportFilter
from cashback.reports.times import LocalTimes
from gateway.money import significant_digits

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


def write_xlsx(report: str, flt: ReportFilter, out: IO[bytes]) -> int:
    """Write the report as an XLSX workbook to `out`; return the number of data rows.

    A sheet holds at most XLSX_MAX_ROWS rows; the rows continue on further sheets, each
    with the title and column names again.
    """
    table = TABLES.get(report)
    if table is None:
        raise ReportError(f"Unknown report {report!r}; choose detail or summary.")
    data = rows(table, flt.purchases(), LocalTimes(flt.period.tz))
    workbook = Workbook(write_only=True)
    title = escape_text(flt.title(report))
    per_sheet = XLSX_MAX_ROWS - 2
    count = 0
    sheet = None
    for row in data:
        if count % per_sheet == 0:
            sheet = workbook.create_sheet(f"{report} {count // per_sheet + 1}")
            sheet.append([title])
            sheet.append(table.header)
        assert sheet is not None
        sheet.append([xlsx_cell(v) for v in row])
        count += 1
    if sheet is None:
        sheet = workbook.create_sheet(f"{report} 1")
        sheet.append([title])
        sheet.append(table.header)
    workbook.save(out)
    return count


def xlsx_file(report: str, flt: ReportFilter) -> IO[bytes]:
    """Return a temporary file holding the workbook, positioned at its start."""
    out = tempfile.TemporaryFile()  # noqa: SIM115 - the response closes it
    write_xlsx(report, flt, out)
    out.seek(0)
    return out
