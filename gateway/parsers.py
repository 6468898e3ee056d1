"""Request body parsers: JSON that keeps money exact, and forms read strictly.

Every body the gateway cannot read the way its sender meant is refused with a
`BodyRefused` (a DRF `ParseError`, so 400 on the REST API and upstream's `{"result":
"error"}` on `/new_purchase`), never a 500 or an HTML page: an unknown or non-text
`charset` (`rot13`, `base64`, `zlib` are codecs Python knows but that do not decode to
text), JSON nested deeper than any purchase needs, more form fields or files than Django's
limits, malformed percent escapes, and bytes that are not valid in the declared charset.
"""

from __future__ import annotations

import codecs
import json
import re
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.http import QueryDict
from rest_framework.exceptions import ParseError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser

# JSON is UTF-8 (RFC 8259 §8.1); ASCII is a subset of it.
JSON_CHARSETS = frozenset({"utf-8", "ascii"})
# Forms: what browsers and HTTP libraries send. Not UTF-7, whose shifted sequences turn
# harmless-looking bytes into any character.
FORM_CHARSETS = frozenset({"utf-8", "ascii", "latin-1", "iso8859-1", "cp1252"})
# A purchase is one flat object; nothing legitimate nests deeper than this. Python's own
# limit is its recursion limit, reached as a RecursionError (a 500) at about 1000 levels.
MAX_JSON_DEPTH = 20

_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


class BodyRefused(ParseError):
    """A body that cannot be read as its sender meant; the message says why."""


def request_charset(parser_context: dict[str, Any], allowed: frozenset[str]) -> str:
    """Return the codec name of the request's declared charset, UTF-8 when none is declared."""
    request = parser_context.get("request")
    params = getattr(request, "content_params", None) or {}
    return charset_name(params.get("charset"), allowed)


def charset_name(declared: str | None, allowed: frozenset[str]) -> str:
    """Return the codec name of a declared charset (None: UTF-8), or raise BodyRefused.

    Django ignores a charset Python does not know and keeps one it knows even if it is not a
    text encoding; both are refused here, as is any charset outside `allowed`.
    """
    if declared is None:
        return "utf-8"
    try:
        info = codecs.lookup(declared)
    except LookupError:
        info = None
    if info is None or info.name not in allowed:
        raise BodyRefused(f"Unsupported charset {declared[:40]!r}: send UTF-8.")
    return info.name


def check_json_depth(text: str, limit: int = MAX_JSON_DEPTH) -> None:
    """Raise BodyRefused if arrays and objects in `text` nest deeper than `limit`."""
    if text.count("[") + text.count("{") <= limit:
        return  # cannot be deeper: the usual case costs two C-level counts
    depth = 0
    for match in _BRACKET.finditer(_JSON_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            if depth > limit:
                raise BodyRefused(f"JSON nested deeper than {limit} levels.")
        else:
            depth -= 1


def parse_json(raw: bytes, declared_charset: str | None = None) -> Any:
    """Parse a JSON body exactly (numbers with a fraction as Decimal), or raise ParseError.

    For views that read the body without DRF's parsers, with the same rules.
    """
    encoding = charset_name(declared_charset, JSON_CHARSETS)
    try:
        text = raw.decode(encoding)
        check_json_depth(text)
        return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ParseError(f"JSON parse error - {exc}") from None
    except RecursionError:  # only if the depth check above were bypassed
        raise BodyRefused(f"JSON nested deeper than {MAX_JSON_DEPTH} levels.") from None


class DecimalJSONParser(JSONParser):
    """Parse JSON numbers with a fraction as `Decimal`, never through `float`."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        request = (parser_context or {}).get("request")
        params = getattr(request, "content_params", None) or {}
        return parse_json(stream.read(), params.get("charset"))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class StrictFormParser(FormParser):
    """Parse a URL-encoded form; refuse what Django would replace, guess at, or crash on."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        encoding = request_charset(parser_context or {}, FORM_CHARSETS)
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
        try:
            text = stream.read().decode(encoding)
        except UnicodeDecodeError:
            raise BodyRefused(f"The form data is not valid {encoding}.") from None
        if _BAD_PERCENT.search(text):
            raise BodyRefused("The form data has a malformed percent escape.")
        try:
            pairs = parse_qsl(
                text,
                keep_blank_values=True,
                encoding=encoding,
                errors="strict",
                max_num_fields=limit,
            )
        except UnicodeDecodeError:
            raise BodyRefused(f"The form data is not valid {encoding}.") from None
        except ValueError:  # parse_qsl's "Max number of fields exceeded"
            raise BodyRefused(f"More than {limit} form fields.") from None
        data = QueryDict(mutable=True, encoding=encoding)
        for name, value in pairs:
            data.appendlist(name, value)
        data._mutable = False
        return data


class StrictMultiPartParser(MultiPartParser):
    """Parse multipart form data; Django's limits answer like any other unreadable body."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        encoding = request_charset(parser_context or {}, FORM_CHARSETS)
        try:
            parsed = super().parse(stream, media_type, parser_context)
        except SuspiciousOperation as exc:
            # TooManyFieldsSent, TooManyFilesSent, RequestDataTooBig: Django would answer
            # its own HTML 400 page.
            raise BodyRefused(f"Multipart form refused - {exc}") from None
        # Django decodes multipart fields with errors="replace": a replacement character is
        # the trace of bytes that were not valid in the declared charset.
        for values in parsed.data.lists():
            if any("\ufffd" in value for value in values[1]):
                raise BodyRefused(f"The form data is not valid {encoding}.")
        return parsed
