"""What a report cell holds, and how text is made safe for a spreadsheet.

Escaping is always the LAST step of a text cell: anything that changes the text afterwards
(stripping the control characters XML cannot hold, say) could uncover a formula again, as
"\\x01=cmd" became "=cmd" when the strip ran after the escape.
"""

from __future__ import annotations

from decimal import Decimal

from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

# A report cell: text (str), exact amounts (Decimal), counts and bytes (int), or empty (None).
Cell = str | Decimal | int | None

# A spreadsheet treats a text cell beginning with one of these as a formula (OWASP CSV
# injection). Every control character is included too: some programs strip them on import,
# which would bring a following "=" to the front.
FORMULA_START = frozenset("=+-@") | frozenset(map(chr, range(32))) | {"\x7f"}


def escape_text(value: str) -> str:
    """Return a text cell a spreadsheet will not run as a formula (a `'` in front)."""
    if value[:1] in FORMULA_START:
        return "'" + value
    return value


def xml_text(value: str) -> str:
    """Return text an XLSX cell can hold: without XML's illegal characters, then escaped."""
    return escape_text(ILLEGAL_CHARACTERS_RE.sub("", value))
