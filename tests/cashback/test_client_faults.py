"""The upstream client against misbehaving real local servers: every transport fault, and
answers outside the documented shape, end in the outcome SPEC.md and docs/faults.md state.

`NOT_SENT` (pending) only when no byte of the request left this host; everything later is
`AMBIGUOUS` (unknown). Each call ends within CASHBACK_TIMEOUT + DEADLINE_SLACK.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote_plus

import pytest

from cashback.client import CashbackClient, UpstreamResult, classify_response, get_client
from cashback.models import Outcome
from gateway.http import DEADLINE_SLACK
from tests.cashback.upstreams import (
    ScriptedServer,
    answer,
    make_certificate,
    read_request,
    request_body,
    reset,
    server_context,
)

FIELDS = {"customer": "c-1", "order_id": "o-1", "currency": "EUR", "currency_amount": "1"}
UNIT = "kYbc5KGKB/KnjynYePEF4cpumKmOz22xVKSVWbmtZ0M="
OK = json.dumps({"result": "ok", "cashback_amount": 101318, "unit": UNIT}).encode()


@pytest.fixture
def servers() -> Iterator[list[ScriptedServer]]:
    started: list[ScriptedServer] = []
    yield started
    for server in started:
        server.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: Any) -> dict[str, tuple[Path, Path]]:
    """Throwaway self-signed certificates: the trusted one, another for the same name."""
    directory = tmp_path_factory.mktemp("certs")
    return {
        "trusted": make_certificate(directory / "a"),
        "stranger": make_certificate(directory / "b"),
        "other-name": make_certificate(directory / "c", "other.example"),
    }


def serve(servers: list[ScriptedServer], script: Any, **kwargs: Any) -> ScriptedServer:
    server = ScriptedServer(script, **kwargs)
    servers.append(server)
    return server


def call(
    url: str,
    settings: Any,
    *,
    timeout: float = 2.0,
    connect_timeout: float = 1.0,
    ca: Path | None = None,
) -> tuple[UpstreamResult, float]:
    """Send one purchase with a fresh client; return the result and the seconds it took."""
    client = CashbackClient(
        url,
        settings.CASHBACK_PARTNER,
        settings.CASHBACK_PARTNER_KEY,
        timeout=timeout,
        connect_timeout=connect_timeout,
        pool_size=1,
        ca_certs=str(ca) if ca else None,
    )
    started = time.monotonic()
    result = client.new_purchase(FIELDS)
    return result, time.monotonic() - started


def answering(payload: bytes) -> Any:
    def script(conn: Any, server: ScriptedServer) -> None:
        server.requests.append(read_request(conn))
        conn.sendall(payload)

    return script


# -- one total deadline ---------------------------------------------------------------------


def trickle(head: bytes, rest: bytes, every: float = 0.3) -> Any:
    def script(conn: Any, server: ScriptedServer) -> None:
        server.requests.append(read_request(conn))
        conn.sendall(head)
        for byte in rest:
            time.sleep(every)
            conn.sendall(bytes([byte]))

    return script


@pytest.mark.parametrize(
    ("head", "rest", "error"),
    [
        # Headers at once, then the body one byte every 0.3 s: each read well within the
        # timeout, the whole far over it.
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n",
            b"x" * 40,
            "answer not complete within 1 s (HTTP 200)",
        ),
        # The status line itself trickling.
        (b"", b"HTTP/1.1 200 OK\r\n" * 3, "no answer within 1 s (read timeout)"),
    ],
)
@pytest.mark.parametrize("tls", [False, True])
def test_a_trickling_answer_ends_at_the_deadline_as_unknown(
    settings: Any,
    servers: list[ScriptedServer],
    certs: Any,
    head: bytes,
    rest: bytes,
    error: str,
    tls: bool,
) -> None:
    cert, key = certs["trusted"]
    context = server_context(cert, key) if tls else None
    server = serve(servers, trickle(head, rest), tls=context)

    result, took = call(server.url(host="localhost"), settings, timeout=1.0, ca=cert)

    assert result.outcome == Outcome.AMBIGUOUS
    assert result.error == error
    assert 1.0 <= took <= 1.0 + DEADLINE_SLACK
    assert len(server.requests) == 1


def test_a_slow_tls_handshake_is_cut_at_the_deadline_and_pending(
    settings: Any, servers: list[ScriptedServer]
) -> None:
    """A server that accepts, then never finishes the handshake: nothing of the request left."""

    def stall(conn: Any, server: ScriptedServer) -> None:
        conn.recv(4096)  # the ClientHello
        conn.sendall(b"\x16\x03\x03\x40\x00")  # a 16 KiB handshake record follows…
        for _ in range(30):  # …one byte every 0.1 s: each read is within the timeouts
            time.sleep(0.1)
            conn.sendall(b"\x00")

    server = serve(servers, stall)

    result, took = call(server.url("https"), settings, timeout=0.8, connect_timeout=5)

    assert result.outcome == Outcome.NOT_SENT
    assert result.error == "connect timeout"
    assert 0.8 <= took <= 0.8 + DEADLINE_SLACK


# -- pending only when no byte of the request left ------------------------------------------


def test_a_refused_connection_is_pending(settings: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    result, _ = call(f"http://127.0.0.1:{port}/new_purchase", settings)

    assert (result.outcome, result.error) == (Outcome.NOT_SENT, "could not connect to upstream")


def test_a_name_that_does_not_resolve_is_pending(settings: Any) -> None:
    result, _ = call("http://upstream.invalid/new_purchase", settings)

    assert result.outcome == Outcome.NOT_SENT
    assert result.error == "could not connect to upstream (its name does not resolve)"


def test_a_connect_timeout_is_pending(settings: Any) -> None:
    # A listening socket with a full backlog: the kernel drops further SYNs, so connecting
    # times out locally, the way an unreachable host does.
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        filler.connect(listener.getsockname())

        result, took = call(
            f"http://127.0.0.1:{listener.getsockname()[1]}/new_purchase",
            settings,
            timeout=2.0,
            connect_timeout=0.3,
        )

    assert (result.outcome, result.error) == (Outcome.NOT_SENT, "connect timeout")
    assert 0.3 <= took < 0.3 + DEADLINE_SLACK


@pytest.mark.parametrize("case", ["stranger", "other-name", "plain-text"])
def test_a_tls_handshake_that_never_completes_is_pending(
    settings: Any, servers: list[ScriptedServer], certs: Any, case: str
) -> None:
    if case == "plain-text":
        # Not TLS at all: an HTTP server answering the ClientHello with text.
        server = serve(servers, lambda conn, s: (conn.recv(1024), conn.sendall(answer(400, b""))))
    else:
        server = serve(servers, answering(OK), tls=server_context(*certs[case]))

    result, _ = call(server.url("https", host="localhost"), settings, ca=certs["trusted"][0])

    assert (result.outcome, result.error) == (Outcome.NOT_SENT, "TLS handshake failed")
    assert server.requests == []


def break_tls_after_reading(conn: Any, server: ScriptedServer) -> None:
    server.requests.append(read_request(conn))
    # Bytes that are not a TLS record, written under the TLS layer.
    with socket.socket(fileno=os.dup(conn.fileno())) as raw:
        raw.sendall(b"\x17\x03\x03\x00\x10" + b"garbage-garbage!")


def reset_tls_after_reading(conn: Any, server: ScriptedServer) -> None:
    server.requests.append(read_request(conn))
    with socket.socket(fileno=os.dup(conn.fileno())) as raw:
        reset(raw)


@pytest.mark.parametrize(
    ("script", "error"),
    [
        (break_tls_after_reading, "connection lost after the request was sent (TLS stream broken)"),
        (reset_tls_after_reading, "connection lost after the request was sent"),
    ],
)
def test_a_tls_stream_broken_after_the_request_is_unknown(
    settings: Any, servers: list[ScriptedServer], certs: Any, script: Any, error: str
) -> None:
    cert, key = certs["trusted"]
    server = serve(servers, script, tls=server_context(cert, key))

    result, _ = call(server.url(host="localhost"), settings, ca=cert)

    assert (result.outcome, result.error) == (Outcome.AMBIGUOUS, error)
    assert len(server.requests) == 1
    assert b"order_id=o-1" in request_body(server.requests[0])


def reset_after_reading(conn: Any, server: ScriptedServer) -> None:
    server.requests.append(read_request(conn))
    reset(conn)


def close_after_reading(conn: Any, server: ScriptedServer) -> None:
    server.requests.append(read_request(conn))
    conn.close()


def half_answer_then_close(conn: Any, server: ScriptedServer) -> None:
    server.requests.append(read_request(conn))
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + OK[:20])
    conn.close()


@pytest.mark.parametrize(
    "script", [reset_after_reading, close_after_reading, half_answer_then_close]
)
def test_a_connection_lost_after_the_request_is_unknown(
    settings: Any, servers: list[ScriptedServer], script: Any
) -> None:
    server = serve(servers, script)

    result, _ = call(server.url(), settings)

    assert result.outcome == Outcome.AMBIGUOUS
    assert result.error == "connection lost after the request was sent"
    assert len(server.requests) == 1


def test_tls_upstream_answers_normally(
    settings: Any, servers: list[ScriptedServer], certs: Any
) -> None:
    cert, key = certs["trusted"]
    server = serve(servers, answering(answer(200, OK)), tls=server_context(cert, key))

    result, _ = call(server.url(host="localhost"), settings, ca=cert)

    assert (result.outcome, result.cashback_amount, result.unit) == (Outcome.OK, 101318, UNIT)


# -- redirects --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_unknown_and_never_followed(
    settings: Any, servers: list[ScriptedServer], status: int
) -> None:
    elsewhere = serve(servers, answering(answer(200, OK)))
    upstream = serve(servers, answering(answer(status, b"moved", {"Location": elsewhere.url()})))
    settings.CASHBACK_API_URL = upstream.url()

    result = get_client().new_purchase(FIELDS)

    assert result.outcome == Outcome.AMBIGUOUS
    assert result.http_status == status
    assert result.error == (
        f"upstream answered a redirect (HTTP {status} to {elsewhere.url()}), not followed"
    )
    assert result.response_excerpt == "moved"
    assert len(upstream.requests) == 1
    assert elsewhere.connections == 0


# -- bounded reads ----------------------------------------------------------------------------


def endless(head: bytes, chunk: bytes, total: int) -> Any:
    """Answer `head`, then `chunk` again and again up to `total` bytes (or until hung up)."""

    def script(conn: Any, server: ScriptedServer) -> None:
        server.requests.append(read_request(conn))
        conn.sendall(head)
        sent = 0
        while sent < total:
            conn.sendall(chunk)
            sent += len(chunk)

    return script


def gzip_bomb(expanded: int) -> tuple[bytes, int]:
    """Return one gzip member of 1 MiB of zeros, and how many of them make `expanded`."""
    return gzip.compress(bytes(1 << 20), 9), expanded >> 20


def measured(url: str, settings: Any) -> tuple[UpstreamResult, float, int]:
    tracemalloc.start()
    try:
        result, took = call(url, settings, timeout=5.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, took, peak


def test_a_100_mb_answer_is_unknown_fast_and_memory_bounded(
    settings: Any, servers: list[ScriptedServer]
) -> None:
    size = 100_000_000
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode()
    server = serve(servers, endless(head, b'{"result": "ok", ' + b" " * 65519, size))

    result, took, peak = measured(server.url(), settings)

    assert result.outcome == Outcome.AMBIGUOUS
    assert result.error == "unreadable answer (HTTP 200, over 64 KiB)"
    assert result.response_excerpt.startswith('{"result": "ok", ')
    assert took < 1.0
    assert peak < 2 * 1024 * 1024


@pytest.mark.parametrize("chunked", [False, True])
def test_a_gzip_bomb_of_1_gib_is_unknown_fast_and_memory_bounded(
    settings: Any, servers: list[ScriptedServer], chunked: bool
) -> None:
    member, count = gzip_bomb(1 << 30)
    if chunked:
        head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        piece = b"%x\r\n%b\r\n" % (len(member), member)
    else:
        length = len(member) * count
        head = f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {length}\r\n\r\n"
        head, piece = head.encode(), member
    server = serve(servers, endless(head, piece, len(piece) * count))

    result, took, peak = measured(server.url(), settings)

    assert result.outcome == Outcome.AMBIGUOUS
    assert result.error == "unreadable answer (HTTP 200, over 64 KiB)"
    assert took < 1.0
    assert peak < 2 * 1024 * 1024


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_a_small_compressed_answer_that_expands_past_the_bound_is_unknown(
    settings: Any, servers: list[ScriptedServer], coding: str
) -> None:
    expanded = b'{"result": "ok", "pad": "' + b" " * (50 << 20) + b'"}'
    body = gzip.compress(expanded, 9) if coding == "gzip" else zlib.compress(expanded, 9)
    assert len(body) < 64 * 1024  # within the raw bound: only the decompressed bound holds it
    server = serve(servers, answering(answer(200, body, {"Content-Encoding": coding})))

    result, took, peak = measured(server.url(), settings)

    assert result.outcome == Outcome.AMBIGUOUS
    assert result.error == "unreadable answer (HTTP 200, over 64 KiB when decompressed)"
    assert took < 1.0
    assert result.response_excerpt.startswith('{"result": "ok", "pad": "   ')
    assert peak < 2 * 1024 * 1024


@pytest.mark.parametrize(
    ("coding", "body"),
    [
        ("gzip", gzip.compress(OK)),
        ("deflate", zlib.compress(OK)),
        ("deflate", zlib.compress(OK)[2:-4]),  # raw deflate, as some servers send it
        ("identity", OK),
    ],
)
def test_a_compressed_answer_within_the_bound_is_read(
    settings: Any, servers: list[ScriptedServer], coding: str, body: bytes
) -> None:
    server = serve(servers, answering(answer(200, body, {"Content-Encoding": coding})))

    result, _ = call(server.url(), settings)

    assert (result.outcome, result.cashback_amount, result.unit) == (Outcome.OK, 101318, UNIT)
    assert b"accept-encoding: identity" in server.requests[0].lower()


@pytest.mark.parametrize(
    ("coding", "body", "error"),
    [
        ("br", b"\x1b\x00", "unreadable answer (HTTP 200, an answer in content coding 'br')"),
        ("gzip", gzip.compress(OK)[:-9], "unreadable answer (HTTP 200, a corrupt gzip answer)"),
    ],
)
def test_an_answer_in_a_coding_we_cannot_read_is_unknown(
    settings: Any, servers: list[ScriptedServer], coding: str, body: bytes, error: str
) -> None:
    server = serve(servers, answering(answer(200, body, {"Content-Encoding": coding})))

    result, _ = call(server.url(), settings)

    assert (result.outcome, result.error) == (Outcome.AMBIGUOUS, error)


# -- the partner key stays with the configured URL ----------------------------------------------


@pytest.mark.parametrize("key", ["sandbox-partner-key", 'k/"\\é+ &=secret-1'])
@pytest.mark.parametrize("shape", ["json-error", "raw", "huge", "decoded", "decoded-slashes"])
def test_an_answer_echoing_the_request_never_shows_the_partner_key(
    settings: Any, servers: list[ScriptedServer], shape: str, key: str
) -> None:
    settings.CASHBACK_PARTNER_KEY = key

    def echo(conn: Any, server: ScriptedServer) -> None:
        request = read_request(conn)
        server.requests.append(request)
        text = request.decode()
        said = dict(parse_qsl(request_body(request).decode()))["partner_key"]
        if shape == "json-error":
            conn.sendall(answer(200, json.dumps({"result": "error", "error": text}).encode()))
        elif shape == "raw":
            conn.sendall(answer(500, request))
        elif shape == "huge":
            conn.sendall(answer(200, json.dumps({"result": "ok", "echo": [text] * 100}).encode()))
        else:
            echoed = json.dumps({"result": "error", "error": f"bad key {said}"})
            if shape == "decoded-slashes":
                echoed = echoed.replace("/", "\\/")
            conn.sendall(answer(200, echoed.encode()))

    server = serve(servers, echo)

    result, _ = call(server.url(), settings)

    assert f"partner_key={quote_plus(key)}".encode() in request_body(server.requests[0])
    for text in (result.error, result.response_excerpt):
        assert key not in text
        assert quote_plus(key) not in text
        assert json.dumps(key)[1:-1] not in text
    assert "[redacted]" in result.response_excerpt


# -- answers outside the documented shape -------------------------------------------------------


def ok_with(**fields: Any) -> bytes:
    return json.dumps({"result": "ok", **fields}).encode()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (ok_with(cashback_amount=2**63, unit=UNIT), "cashback_amount is not valid"),
        (ok_with(cashback_amount=10**30, unit=UNIT), "cashback_amount is not valid"),
        (ok_with(cashback_amount=-1, unit=UNIT), "cashback_amount is not valid"),
        (ok_with(cashback_amount=5.0, unit=UNIT), "cashback_amount is not valid"),
        (ok_with(cashback_amount="5", unit=UNIT), "cashback_amount is not valid"),
        (ok_with(cashback_amount=True, unit=UNIT), "cashback_amount is not valid"),
        (ok_with(unit=UNIT), "cashback_amount is not valid"),
        (ok_with(cashback_amount=5, unit=UNIT + "A"), "unit is not valid"),
        (ok_with(cashback_amount=5, unit="x" * 45), "unit is not valid"),
        (ok_with(cashback_amount=5, unit=UNIT[:-2] + "\x00="), "unit is not valid"),
        (ok_with(cashback_amount=5, unit=UNIT[:-2] + "\ud800="), "unit is not valid"),
        (ok_with(cashback_amount=5, unit=5), "unit is not valid"),
        (ok_with(cashback_amount=5), "unit is not valid"),
        (b'{"result": "error", "error": "bad\\u0000address"}', "error holds control characters"),
        (b'{"result": "error", "error": "bad \\ud800 address"}', "error holds control characters"),
        (b'{"result": "error", "error": "\\u001b[31mred"}', "error holds control characters"),
        (b'{"result": "error", "error": 7}', "error is not a text"),
        (b'{"result": "error"}', "error is not a text"),
        (b'{"result": "ok", "result": "error", "error": "x"}', "a key appears twice"),
    ],
)
def test_an_answer_outside_the_documented_shape_is_unknown_with_evidence(
    body: bytes, error: str
) -> None:
    result = classify_response(200, body)

    assert result.outcome == Outcome.AMBIGUOUS
    assert result.error == f"unexpected answer (HTTP 200, not the documented JSON: {error})"
    assert (result.cashback_amount, result.unit) == (None, None)
    assert result.response_excerpt == body.decode()
    result.response_excerpt.encode("utf-8")  # storable: no lone surrogate


@pytest.mark.parametrize(
    "body",
    [b"[1, 2]", b'"ok"', b"null", b'{"result": "ok", "cashback_amount": NaN}', b"", b"<html>"],
)
def test_an_answer_that_is_not_a_json_object_is_unknown(body: bytes) -> None:
    result = classify_response(200, body)

    assert result.outcome == Outcome.AMBIGUOUS
    assert result.error == "unexpected answer (HTTP 200, not the documented JSON)"
    assert result.response_excerpt == body.decode()


def test_the_largest_64_bit_amount_is_accepted() -> None:
    result = classify_response(200, ok_with(cashback_amount=2**63 - 1, unit=UNIT))
    assert (result.outcome, result.cashback_amount, result.unit) == (Outcome.OK, 2**63 - 1, UNIT)


def test_the_excerpt_escapes_what_a_text_column_cannot_hold() -> None:
    body = b"\x00\x01 nul \xff\xfe bytes \x1b esc \xed\xa0\x80 surrogate\nline\ttab"

    result = classify_response(200, body)

    assert result.response_excerpt == (
        "\\x00\\x01 nul \\xff\\xfe bytes \\x1b esc \\xed\\xa0\\x80 surrogate\nline\ttab"
    )


def test_the_excerpt_shows_invisible_characters_and_json_surrogates() -> None:
    body = '{"result": "error", "error": "a\u202eb\u200bc\u2028d", "x": "\\ud800"}'

    result = classify_response(200, body.encode())

    assert result.response_excerpt == (
        '{"result": "error", "error": "a\\u202eb\\u200bc\\u2028d", "x": "\\ud800"}'
    )
    assert (result.outcome, result.error) == (Outcome.REJECTED, "a\\u202eb\\u200bc d")


def test_a_long_answer_is_cut_but_keeps_the_exact_amount_and_unit() -> None:
    body = json.dumps({"pad": "p" * 5000, "result": "ok", "cashback_amount": 2**64, "unit": UNIT})

    result = classify_response(200, body.encode())

    assert result.outcome == Outcome.AMBIGUOUS
    assert len(result.response_excerpt) == 2000
    assert result.response_excerpt.endswith(f' … cashback_amount={2**64}, unit="{UNIT}"')


# -- "authentication failed" as a person reads it ---------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        "authentication failed",
        "Authentication failed",
        "AUTHENTICATION FAILED",
        "authentication failed ",
        " authentication failed.",
        "authentication failed!",
        "authentication failed\n",
        "authentication  \t failed",
        "Authentication failed.\r\n",
        "authentication failed...",
    ],
)
def test_authentication_failed_is_matched_as_a_person_reads_it(message: str) -> None:
    result = classify_response(200, json.dumps({"result": "error", "error": message}).encode())
    assert result.outcome == Outcome.AUTH_FAILED
    assert result.error == "authentication failed"


@pytest.mark.parametrize(
    "message", ["authentication failed for order 7", "no authentication failed", "auth failed"]
)
def test_other_errors_that_mention_authentication_are_rejections(message: str) -> None:
    body = json.dumps({"result": "error", "error": message}).encode()
    assert classify_response(200, body).outcome == Outcome.REJECTED


# -- through the API: the purchase and its attempt keep the evidence --------------------------


@pytest.mark.parametrize(
    ("payload", "error", "excerpt"),
    [
        (
            answer(302, b"see other", {"Location": "https://elsewhere.example/x"}),
            "upstream answered a redirect (HTTP 302 to https://elsewhere.example/x), not followed",
            "see other",
        ),
        (
            answer(200, ok_with(cashback_amount=2**64, unit=UNIT[:-2] + "\x00=")),
            "unexpected answer (HTTP 200, not the documented JSON: cashback_amount is not valid)",
            json.dumps({"result": "ok", "cashback_amount": 2**64, "unit": UNIT[:-2] + "\x00="}),
        ),
        (
            answer(200, b'{"result": "error", "error": "bad\\u0000 \\ud800"}'),
            "unexpected answer (HTTP 200, not the documented JSON: error holds control characters)",
            '{"result": "error", "error": "bad\\u0000 \\ud800"}',
        ),
    ],
)
def test_an_unusable_answer_leaves_the_purchase_unknown_with_its_evidence(
    shop: Any,
    settings: Any,
    servers: list[ScriptedServer],
    payload: bytes,
    error: str,
    excerpt: str,
) -> None:
    from cashback.models import Attempt

    upstream = serve(servers, answering(payload))
    settings.CASHBACK_API_URL = upstream.url()

    response = shop.post_purchase()

    assert response.status_code == 202
    assert (response.json()["status"], response.json()["error"]) == ("unknown", error)
    attempt = Attempt.objects.get()
    assert (attempt.outcome, attempt.error) == (Outcome.AMBIGUOUS, error)
    assert attempt.response_excerpt == excerpt
    assert (attempt.cashback_amount, attempt.unit) == (None, None)
