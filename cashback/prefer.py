"""`Prefer: respond-async` (RFC 7240) on the purchase POST: store, answer 202, let the worker send.

Kept apart from the view so whichever view takes the POST asks two questions: does the
request prefer an asynchronous answer, and which headers go on it.
"""

from __future__ import annotations

from urllib.parse import quote

PREFERENCE = "respond-async"


def prefers_respond_async(header: str | None) -> bool:
    """Return whether a `Prefer` header value holds the `respond-async` preference.

    Preferences are comma-separated, each a token with an optional `=value` and `;`
    parameters; tokens are case-insensitive (RFC 7240 section 2). Repeated headers arrive
    joined by commas.
    """
    for preference in (header or "").split(","):
        token = preference.split(";", 1)[0].split("=", 1)[0].strip().lower()
        if token == PREFERENCE:
            return True
    return False


def async_headers(collection_path: str, order_id: str) -> dict[str, str]:
    """Return the headers of a 202 answered before upstream: what was applied, where to poll."""
    return {
        "Preference-Applied": PREFERENCE,
        "Location": f"{collection_path.rstrip('/')}/{quote(order_id, safe='')}",
    }
