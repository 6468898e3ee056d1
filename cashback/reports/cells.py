"""What a report cell holds, and how text is made safe for a spreadsheet.

Escaping is always the LAST step of a text cell: anything that changes the text afterwards
(stripping the control characters XML cannot hold, say) could uncover a formula again, as
"\\x01=cmd" became "=cmd" when the strip ran after the escape.
"""

from __future__ import annotations

from decimal import Decimal

from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

from gateway.spreadsheets import FORMULA_START, escape_text

# A report cell: text (str), exact amounts (Decimal), counts and bytes (int), or empty (None).
Cell = str | Decimal | int | None

__all__ = ["FORMULA_START", "Cell", "escape_text", "xml_text"]


def xml_text(value: str) -> str:
    """Return text an XLSX cell can hold: without XML's illegal characters, then escaped."""
    return escape_text(ILLEGAL_CHARACTERS_RE.sub("", value))
