"""The CSV writer: a title line, the column names, the rows, streamed in chunks."""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from decimal import Decimal

from cashback.reports.cells import Cell, escape_text
from cashback.reports.columns import DETAIL, TABLES, csv_rows, rows
from cashback.reports.periods import ReportError, ReportFilter
from cashback.reports.times import LocalTimes


class _Line:
    """A file-like object whose write() returns what csv.writer wrote."""

    def write(self, value: str) -> str:
        return value


def csv_cell(value: Cell) -> str:
    """Return one typed cell as CSV text (the general path; the detail export has a fast one)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return escape_text(value)
    if isinstance(value, Decimal):
        # Exact, plain notation: never "1E-9".
        return format(value, "f")
    return str(value)


def general_csv_rows(report: str, flt: ReportFilter) -> Iterator[list[str]]:
    """Yield the rows as CSV text through the typed rows (what every report but detail uses)."""
    table = TABLES[report]
    for row in rows(table, flt.purchases(), LocalTimes(flt.period.tz)):
        yield [csv_cell(v) for v in row]


# Excel reads a CSV file as UTF-8 only when it starts with this byte order mark.
BOM = "\ufeff"


def csv_chunks(
    report: str, flt: ReportFilter, lines_per_chunk: int = 500, *, bom: bool = False
) -> Iterator[str]:
    """Return the report as CSV text in chunks: always the title on line 1 and the column
    names on line 2, then the rows; with `bom`, a UTF-8 byte order mark first (for Excel).

    Raises ReportError for an unknown report now, before anything is streamed.
    """
    if report not in TABLES:
        raise ReportError(f"Unknown report {report!r}; choose detail or summary.")
    chunks = _csv_chunks(report, flt, lines_per_chunk)
    return itertools.chain([BOM], chunks) if bom else chunks


def _csv_chunks(report: str, flt: ReportFilter, lines_per_chunk: int) -> Iterator[str]:
    table = TABLES[report]
    if table is DETAIL:
        data = csv_rows(table, flt.purchases(), LocalTimes(flt.period.tz))
    else:
        data = general_csv_rows(report, flt)
    writer = csv.writer(_Line())
    yield writer.writerow([escape_text(flt.title(report))])
    yield writer.writerow(table.header)
    buffer: list[str] = []
    for row in data:
        buffer.append(writer.writerow(row))
        if len(buffer) >= lines_per_chunk:
            yield "".join(buffer)
            buffer.clear()
    if buffer:
        yield "".join(buffer)
