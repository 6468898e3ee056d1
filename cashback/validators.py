"""Validation of what a merchant reports: Obyte addresses, emails, purchase units.

The Obyte address check follows ocore's `chash.js` (`isChashValid` for 160-bit hashes):
a 32-character base32 string whose 160 bits interleave 128 bits of data with a 32-bit
checksum at offsets taken from the digits of pi.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import operator
import re
import unicodedata

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

_PI = "14159265358979323846264338327950288419716939937510"
_BASE32 = re.compile(r"[A-Z2-7]{32}")
_QR_PREFIXES = ("obyte:", "byteball:")
_UNIT = re.compile(r"[A-Za-z0-9+/]{43}=")


def _checksum_offsets() -> list[int]:
    offsets, offset = [], 0
    for digit in _PI:
        if digit == "0":
            continue
        offset += int(digit)
        if offset >= 160:
            break
        offsets.append(offset)
    assert len(offsets) == 32
    return offsets


_OFFSETS = frozenset(_checksum_offsets())
# The bits of the data and of the checksum, picked out of the 160 in one C-level call each.
_CLEAN_BITS = operator.itemgetter(*(i for i in range(160) if i not in _OFFSETS))
_CHECKSUM_BITS = operator.itemgetter(*sorted(_OFFSETS))


def is_valid_obyte_address(address: str) -> bool:
    """Return whether `address` is a valid Obyte address (chash160 with a good checksum)."""
    if not _BASE32.fullmatch(address):
        return False
    bits = f"{int.from_bytes(base64.b32decode(address), 'big'):0160b}"
    clean = "".join(_CLEAN_BITS(bits))
    checksum = "".join(_CHECKSUM_BITS(bits))
    clean_bytes = int(clean, 2).to_bytes(16, "big")
    digest = hashlib.sha256(clean_bytes).digest()
    expected = bytes([digest[5], digest[13], digest[21], digest[29]])
    return int(checksum, 2).to_bytes(4, "big") == expected


def make_obyte_address(data: bytes) -> str:
    """Return the Obyte address of 16 bytes of clean data (ocore's getChash160 after hashing)."""
    assert len(data) == 16
    digest = hashlib.sha256(data).digest()
    checksum = (
        f"{int.from_bytes(bytes([digest[5], digest[13], digest[21], digest[29]]), 'big'):032b}"
    )
    clean = iter(f"{int.from_bytes(data, 'big'):0128b}")
    check = iter(checksum)
    bits = "".join(next(check) if i in _OFFSETS else next(clean) for i in range(160))
    return base64.b32encode(int(bits, 2).to_bytes(20, "big")).decode()


def strip_qr_prefix(address: str) -> str:
    """Remove an `obyte:` or `byteball:` URI prefix, as a scanned QR code carries."""
    lowered = address.lower()
    for prefix in _QR_PREFIXES:
        if lowered.startswith(prefix):
            return address[len(prefix) :]
    return address


def normalize_address(raw: str) -> str:
    """Return the address to send cashback to, or raise ValidationError.

    Accepts an Obyte address (with an optional QR prefix) or an email address.
    """
    address = strip_qr_prefix(raw.strip())
    if "@" in address:
        try:
            validate_email(address)
        except ValidationError:
            raise ValidationError("Enter a valid Obyte address or email address.") from None
        return address
    if is_valid_obyte_address(address):
        return address
    if _BASE32.fullmatch(address.upper()) and is_valid_obyte_address(address.upper()):
        raise ValidationError("Obyte addresses are upper case.")
    raise ValidationError(
        "Enter a valid Obyte address (32 characters A-Z, 2-7 with a valid checksum) "
        "or an email address."
    )


def is_valid_unit(unit: str) -> bool:
    """Return whether `unit` is a canonical base64 id of 32 bytes (an Obyte unit hash)."""
    if not _UNIT.fullmatch(unit):
        return False
    try:
        raw = base64.b64decode(unit, validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(raw) == 32 and base64.b64encode(raw).decode() == unit


# Characters no text field of a purchase may hold, by Unicode category: controls (Cc: NUL,
# tab, CR, LF, ESC, DEL, C1), format characters (Cf: bidi overrides and isolates, zero-width
# spaces, the BOM, soft hyphen, tag characters), lone surrogates (Cs, which PostgreSQL and
# UTF-8 cannot store) and line/paragraph separators (Zl, Zp: U+2028/2029 end a line in
# JavaScript and in some log viewers). They split log lines and CSV rows, hide text in admin
# pages and reports, and upstream has no use for them. Tab is refused too: no field is
# tabular, and a tab in a customer id is always a copy-and-paste accident.
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# Zero-width (non-)joiners are format characters that emoji sequences and several scripts
# (Persian, Indic) need in ordinary text.
ALLOWED_FORMAT_CHARACTERS = frozenset({"\u200c", "\u200d"})
CONTROL_CHARACTERS_MESSAGE = "Must not contain control characters."


def has_control_characters(value: str) -> bool:
    """Return whether `value` holds a character of REFUSED_CATEGORIES (NUL, tab, U+202E…)."""
    if value.isprintable() and value.isascii():
        return False  # the usual case, answered without a per-character loop
    return any(
        unicodedata.category(c) in REFUSED_CATEGORIES and c not in ALLOWED_FORMAT_CHARACTERS
        for c in value
    )


def validate_no_control_characters(value: str) -> None:
    """Raise ValidationError if `value` holds a control or format character."""
    if has_control_characters(value):
        raise ValidationError(CONTROL_CHARACTERS_MESSAGE, code="control_characters")
