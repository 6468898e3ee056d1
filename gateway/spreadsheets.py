"""Text cells a spreadsheet will not run as formulas (OWASP CSV injection), for every export."""

from __future__ import annotations

# A spreadsheet treats a text cell beginning with one of these as a formula. Every control
# character is included too: some programs strip them on import, which would bring a
# following "=" to the front.
FORMULA_START = frozenset("=+-@") | frozenset(map(chr, range(32))) | {"\x7f"}


def escape_text(value: str) -> str:
    """Return a text cell a spreadsheet will not run as a formula (a `'` in front).

    Call it last: anything that changes the text afterwards could uncover a formula again.
    """
    if value[:1] in FORMULA_START:
        return "'" + value
    return value
