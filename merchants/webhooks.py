"""Webhook URL rules: https only, read the same way by every parser, never an inside address.

Two checks. When a merchant sets the URL, it must be plain enough that every URL parser
(ours, urllib3's, the resolver's) sees the same host and port: no userinfo, backslashes,
whitespace, control or non-ASCII characters, and no host that a resolver reads as a
different IP address (`0x7f.1`, `2130706433`). Then the addresses it resolves to must be
public. At delivery the address is checked again on the connection actually made
(`gateway.http.webhook_session`), since DNS may answer differently by then.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

import urllib3

MAX_URL_LENGTH = 500
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_NETLOC = re.compile(r"(?P<host>\[[^\]]+\]|[^:\[\]]+)(?::(?P<port>[0-9]{1,5}))?")


class WebhookUrlError(ValueError):
    pass


def check_webhook_syntax(url: str, *, allow_http: bool = False) -> str:
    """Raise WebhookUrlError unless `url` is an https URL every parser reads alike.

    Return its host. `allow_http` (development, WEBHOOK_ALLOW_PRIVATE) also allows http.
    """
    schemes = ("http", "https") if allow_http else ("https",)
    need = "Webhook URLs must be http(s) URLs." if allow_http else "Webhook URLs must use https."
    if len(url) > MAX_URL_LENGTH:
        raise WebhookUrlError(f"Webhook URLs have at most {MAX_URL_LENGTH} characters.")
    if not url.isascii() or not url.isprintable() or " " in url:
        raise WebhookUrlError(
            "Webhook URLs may not hold spaces, control or non-ASCII characters "
            "(write an international domain name in its xn-- form)."
        )
    if "\\" in url:
        raise WebhookUrlError("Webhook URLs may not hold backslashes.")
    try:
        parts = urlsplit(url)
        seen = urllib3.util.parse_url(url)
        split_port = parts.port
    except (ValueError, urllib3.exceptions.LocationParseError):
        raise WebhookUrlError("Webhook URLs must have a valid host and port.") from None
    if parts.scheme.lower() not in schemes:
        raise WebhookUrlError(need)
    if "@" in parts.netloc:
        raise WebhookUrlError("Webhook URLs may not hold a user name or password.")
    if parts.fragment or "#" in url:
        raise WebhookUrlError("Webhook URLs may not hold a fragment (#…).")
    netloc = _NETLOC.fullmatch(parts.netloc.lower())
    if netloc is None:
        raise WebhookUrlError(need)
    host, port = netloc["host"], netloc["port"]
    if port is not None and not 0 < int(port) < 65536:
        raise WebhookUrlError("The port of a webhook URL must be between 1 and 65535.")
    if host.startswith("["):
        try:
            if "%" in host:  # a zone id names a local interface
                raise ValueError(host)
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise WebhookUrlError(f"The host {host} is not a valid IPv6 address.") from None
    else:
        _check_host_name(host)
    # The parser the HTTP client uses must agree on what it connects to.
    bare = host.strip("[]")
    if (seen.host or "").lower().strip("[]") != bare or (parts.hostname or "") != bare:
        raise WebhookUrlError("Webhook URLs must name their host unambiguously.")
    if (seen.port, split_port) != ((int(port), int(port)) if port else (None, None)):
        raise WebhookUrlError("Webhook URLs must name their port unambiguously.")
    return bare


def _check_host_name(host: str) -> None:
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise WebhookUrlError(f"The host {host} is not a valid host name.")
    try:
        socket.inet_aton(host)
    except OSError:
        reads_as_ip = False
    else:
        reads_as_ip = True
    if reads_as_ip or labels[-1].isdigit():
        # A resolver reads "127.1", "0x7f.0.0.1" or "2130706433" as an address; only the
        # plain dotted form means the same to everyone.
        try:
            canonical = str(ipaddress.IPv4Address(host)) == host
        except ValueError:
            canonical = False
        if not canonical:
            raise WebhookUrlError(
                f"The host {host} is read as an IP address differently by different parsers; "
                "write it as four decimal numbers (a.b.c.d)."
            )


def check_webhook_url(url: str, *, resolve: bool = True) -> list[str]:
    """Raise WebhookUrlError unless `url` is a plain https URL and every address it resolves
    to is public.

    Return the resolved addresses. With resolve=False (development and tests only, by the
    WEBHOOK_ALLOW_PRIVATE setting) http and private targets are allowed.
    """
    host = check_webhook_syntax(url, allow_http=not resolve)
    if not resolve:
        return []
    port = urlsplit(url).port or 443
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise WebhookUrlError(f"The host {host} does not resolve.") from None
    addresses = sorted({str(info[4][0]) for info in infos})
    for address in addresses:
        if not is_public(address):
            raise WebhookUrlError(
                f"The host {host} resolves to {address}, which is not a public address."
            )
    return addresses


def is_public(address: str) -> bool:
    """Return whether `address` is a public unicast address (IPv4-mapped IPv6 unwrapped)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast
