"""Webhook URLs that two parsers read differently are refused when a merchant sets them."""

from __future__ import annotations

from typing import Any

import pytest

from merchants.webhooks import WebhookUrlError, check_webhook_syntax, check_webhook_url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://127.0.0.1:8243\\@8.8.8.8/hook", "may not hold backslashes"),
        ("https://8.8.8.8\\.example.com/hook", "may not hold backslashes"),
        ("https://user:pw@8.8.8.8/hook", "may not hold a user name or password"),
        ("https://8.8.8.8@127.0.0.1/hook", "may not hold a user name or password"),
        ("https://8.8.8.8:443@127.0.0.1/hook", "may not hold a user name or password"),
        ("https://8.8.8.8/ho ok", "may not hold spaces, control or non-ASCII characters"),
        ("https://8.8.8.8/hook\r\nHost: evil", "may not hold spaces, control"),
        ("https://8.8.8.8\t/hook", "may not hold spaces, control"),
        ("https://exam\x00ple.com/hook", "may not hold spaces, control"),
        ("https://ехample.com/hook", "xn-- form"),  # a Cyrillic "е"
        ("https://example.com\u3002evil.com/hook", "non-ASCII"),  # an ideographic full stop
        ("https://127.1/hook", "is read as an IP address differently"),
        ("https://0x7f.0.0.1/hook", "is read as an IP address differently"),
        ("https://2130706433/hook", "is read as an IP address differently"),
        ("https://0177.0.0.1/hook", "is read as an IP address differently"),
        ("https://example.com#@127.0.0.1/hook", "may not hold a fragment"),
        ("https://-bad-.example.com/hook", "is not a valid host name"),
        ("https://exa_mple.com/hook", "is not a valid host name"),
        ("https://example.com:0/hook", "port of a webhook URL must be between 1 and 65535"),
        ("https://example.com:99999/hook", "must have a valid host and port"),
        ("https://[::1%25eth0]/hook", "is not a valid IPv6 address"),
        ("https://[::1/hook", "must have a valid host and port"),
        ("ftp://example.com/hook", "Webhook URLs must use https."),
        ("https:///hook", "Webhook URLs must use https."),
    ],
)
def test_an_ambiguous_webhook_url_is_refused(url: str, message: str) -> None:
    with pytest.raises(WebhookUrlError) as refused:
        check_webhook_syntax(url)
    assert message in str(refused.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/hook",
        "https://hooks.example.com:8443/cashback?shop=7&x=%20y",
        "https://xn--e1afmkfd.xn--p1ai/hook",
        "https://93.184.215.14/hook",
        "https://[2606:2800:220:1:248:1893:25c8:1946]/hook",
    ],
)
def test_a_plain_webhook_url_passes_the_syntax_check(url: str) -> None:
    check_webhook_syntax(url)


def test_the_merchant_api_refuses_an_ambiguous_url_with_400(shop: Any, settings: Any) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = False
    url = "https://127.0.0.1:8243\\@8.8.8.8/hook"

    response = shop.client.patch("/api/v1/merchant", {"webhook_url": url}, format="json")

    assert response.status_code == 400
    assert response.json()["webhook_url"] == ["Webhook URLs may not hold backslashes."]
    shop.merchant.refresh_from_db()
    assert shop.merchant.webhook_url == ""


def test_the_syntax_rules_hold_in_development_too(shop: Any, settings: Any) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = True
    url = "http://user@127.0.0.1:8243/hook"

    response = shop.client.patch("/api/v1/merchant", {"webhook_url": url}, format="json")

    assert response.status_code == 400
    assert response.json()["webhook_url"] == ["Webhook URLs may not hold a user name or password."]


@pytest.mark.parametrize(
    "url", ["https://localhost/hook", "https://[::ffff:127.0.0.1]/hook", "https://0.0.0.0/"]
)
def test_a_name_or_address_inside_our_network_is_refused(url: str) -> None:
    with pytest.raises(WebhookUrlError) as refused:
        check_webhook_url(url)
    assert "which is not a public address" in str(refused.value)
