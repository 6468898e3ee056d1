"""Webhook URL rules: https only, and never an address inside our own network."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


class WebhookUrlError(ValueError):
    pass


def check_webhook_url(url: str, *, resolve: bool = True) -> list[str]:
    """Raise WebhookUrlError unless `url` is https and every address it resolves to is public.

    Return the resolved addresses. With resolve=False (development and tests only, by the
    WEBHOOK_ALLOW_PRIVATE setting) http and private targets are allowed.
    """
    parts = urlsplit(url)
    if not resolve:
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WebhookUrlError("Webhook URLs must be http(s) URLs.")
        return []
    if parts.scheme != "https" or not parts.hostname:
        raise WebhookUrlError("Webhook URLs must use https.")
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise WebhookUrlError(f"The host {parts.hostname} does not resolve.") from None
    addresses = sorted({str(info[4][0]) for info in infos})
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global or ip.is_multicast:
            raise WebhookUrlError(
                f"The host {parts.hostname} resolves to {address}, which is not a public address."
            )
    return addresses
