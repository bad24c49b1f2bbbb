"""Hostile requests get a 4xx with a V2 error body (or a closed connection), and the
server answers a good request right after each. Real server, real sockets."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from doubles import until
from serving import running
from torchrig.settings import ServeSettings

GOOD = json.dumps(
    {
        "inputs": [
            {"name": "dense", "datatype": "FP32", "shape": [1, 13], "data": [0.5] * 13},
            {"name": "sparse", "datatype": "INT64", "shape": [1, 26], "data": list(range(26))},
        ]
    }
).encode()
LIMITS = {
    "max_header_kb": 16.0,
    "max_headers": 40,
    "header_timeout_s": 0.5,
    "body_timeout_s": 0.5,
}


@pytest.fixture(scope="module")
def hardened(demo_repo: Path) -> Iterator[str]:
    settings = ServeSettings(port=0, log_format="text", max_body_mb=1.0, **LIMITS)
    with running(demo_repo, settings) as (url, _):
        yield url


def still_serves(url: str) -> None:
    response = httpx.post(f"{url}/v2/models/ranker/infer", content=GOOD, timeout=30)
    assert response.status_code == 200, response.text


def v2_error(response: httpx.Response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert fragment in response.json()["error"], response.text


def raw(url: str, data: bytes, *, timeout_s: float = 10.0) -> bytes:
    """Send bytes on a fresh connection; everything the server answers until it closes."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout_s) as sock:
        if data:
            sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v2/models/ranker/infer", DEEP),
        ("/v2/models/ranker/infer", '{"inputs": [], "parameters": {"p": ' + DEEP + "}}"),
        ("/v2/repository/index", DEEP),  # unauthenticated
    ],
)
def test_deeply_nested_json_is_a_400_with_a_v2_body(hardened: str, path: str, body: str) -> None:
    response = httpx.post(f"{hardened}{path}", content=body.encode(), timeout=30)
    assert response.status_code == 400, response.text
    assert "error" in response.json()
    still_serves(hardened)


# (surrounding spaces are HTTP's optional whitespace: the parser strips them)
@pytest.mark.parametrize("value", ["\u00b2\u00b3", "+12", "1_2", "-1", "0x1", "1 2"])
def test_inference_header_content_length_takes_ascii_digits_only(hardened: str, value: str) -> None:
    response = httpx.post(
        f"{hardened}/v2/models/ranker/infer",
        content=GOOD,
        headers={"Inference-Header-Content-Length": value.encode("latin-1")},  # type: ignore[dict-item]
        timeout=30,
    )
    v2_error(response, 400, "Inference-Header-Content-Length")
    still_serves(hardened)


@pytest.mark.parametrize("version", ["01", "+1", "1_0", "%201", "1.0"])
def test_versions_are_strict_integers(hardened: str, version: str) -> None:
    response = httpx.post(f"{hardened}/v2/models/ranker/versions/{version}/infer", content=GOOD)
    assert response.status_code in (400, 404), response.text
    assert "error" in response.json()
    assert httpx.post(f"{hardened}/v2/models/ranker/versions/1/infer", content=GOOD).is_success


def test_float_data_as_strings_is_refused(hardened: str) -> None:
    body = json.loads(GOOD)
    body["inputs"][0]["data"] = ["1.5", "NaN"] + [0.5] * 11
    response = httpx.post(f"{hardened}/v2/models/ranker/infer", content=json.dumps(body))
    v2_error(response, 400, "must be numbers")
    still_serves(hardened)


@pytest.mark.parametrize("shape", [[2**63 - 1, 0], [2**31, 2**31, 0]])
@pytest.mark.parametrize("binary", [False, True])
def test_empty_tensors_with_huge_dims_are_a_400(
    hardened: str, shape: list[int], binary: bool
) -> None:
    model = "classifier" if len(shape) == 3 else "ranker"
    wire: dict[str, Any] = {"name": "dense", "datatype": "FP32", "shape": shape}
    if binary:
        wire["parameters"] = {"binary_data_size": 0}
    else:
        wire["data"] = []
    head = json.dumps({"inputs": [wire]}).encode()
    headers = {"Inference-Header-Content-Length": str(len(head))} if binary else {}
    response = httpx.post(f"{hardened}/v2/models/{model}/infer", content=head, headers=headers)
    assert response.status_code == 400, response.text
    still_serves(hardened)


def test_bytes_inputs_are_refused_before_their_data_is_parsed(hardened: str) -> None:
    count = 200_000  # empty BYTES elements: 4 bytes each
    head = json.dumps(
        {
            "inputs": [
                {"name": "sparse", "datatype": "BYTES", "shape": [count],
                 "parameters": {"binary_data_size": 4 * count}},
            ]
        }
    ).encode()  # fmt: skip
    response = httpx.post(
        f"{hardened}/v2/models/ranker/infer",
        content=head + bytes(4 * count),
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    v2_error(response, 400, "datatype BYTES, expected INT64")
    still_serves(hardened)


def test_a_header_block_past_the_limit_is_a_431(hardened: str) -> None:
    huge = b"x-filler: " + b"a" * (64 * 1024) + b"\r\n"
    answer = raw(hardened, b"GET /v2 HTTP/1.1\r\nhost: t\r\n" + huge + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"--max-header-kb" in answer
    still_serves(hardened)


def test_a_pipelined_header_block_past_the_limit_is_a_431(hardened: str) -> None:
    """A second request's head that begins inside the read carrying the first request is
    measured too: the connection is refused with a 431 (not served twice)."""
    huge = b"x-filler: " + b"a" * (64 * 1024) + b"\r\n"
    first = b"GET /v2/health/live HTTP/1.1\r\nhost: t\r\n\r\n"
    answer = raw(hardened, first + b"GET /v2 HTTP/1.1\r\nhost: t\r\n" + huge + b"\r\n")
    assert b"HTTP/1.1 431 " in answer, answer[:400]
    assert b"--max-header-kb" in answer
    still_serves(hardened)


def test_a_header_streamed_past_the_limit_is_cut_off_with_a_431(hardened: str) -> None:
    parts = urlsplit(hardened)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(b"GET /v2 HTTP/1.1\r\nhost: t\r\nx-filler: ")
        sent = 0
        try:
            while sent < 64 * 1024 * 1024:  # the server refuses long before this
                sock.sendall(b"a" * 65536)
                sent += 65536
        except OSError:  # the server closed the connection: the refusal is what we read
            pass
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    assert sent < 64 * 1024 * 1024
    # the 431 is written before the close; a reset of the unread upload may lose it
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    still_serves(hardened)


def test_too_many_header_fields_is_a_431(hardened: str) -> None:
    fields = b"".join(b"x-h%d: 1\r\n" % i for i in range(LIMITS["max_headers"] + 1))  # type: ignore[operator]
    answer = raw(hardened, b"GET /v2 HTTP/1.1\r\nhost: t\r\n" + fields + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"--max-headers" in answer
    still_serves(hardened)


@pytest.mark.parametrize(
    ("sent", "which"),
    [
        (b"", "--header-timeout-s"),  # connected, then silent
        (b"POST /v2/models/ranker/infer HTTP/1.1\r\nhost: t\r\n", "--header-timeout-s"),
        (
            b"POST /v2/models/ranker/infer HTTP/1.1\r\nhost: t\r\ncontent-length: 900\r\n\r\n{",
            "--body-timeout-s",
        ),
    ],
    ids=["idle", "partial-head", "partial-body"],
)
def test_slow_clients_are_answered_408_and_closed(hardened: str, sent: bytes, which: str) -> None:
    # the socket's own timeout (10 s) is the test's deadline; the server closes at 0.5 s
    answer = raw(hardened, sent)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert which.encode() in answer
    still_serves(hardened)


def test_connections_past_the_cap_get_a_503(demo_repo: Path) -> None:
    settings = ServeSettings(port=0, log_format="text", max_connections=2)
    with running(demo_repo, settings) as (url, _):
        parts = urlsplit(url)
        idle = [socket.create_connection((parts.hostname, parts.port)) for _ in range(2)]
        try:
            response = httpx.get(f"{url}/v2", headers={"connection": "close"})
            assert response.status_code == 503
        finally:
            for sock in idle:
                sock.close()
        assert httpx.get(f"{url}/v2", headers={"connection": "close"}).status_code == 200


def test_a_head_request_gets_its_head_and_the_next_request_its_answer(hardened: str) -> None:
    """A response without a body write (HEAD) still goes out: its held head is written when
    the response completes, on a connection kept alive for the next request."""
    answer = raw(
        hardened,
        b"HEAD /v2/health/ready HTTP/1.1\r\nhost: t\r\n\r\n"
        b"GET /v2/health/live HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    )
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert rest.startswith(b"HTTP/1.1 200 "), answer[:300]  # no body after the HEAD's head
    assert rest.endswith(b'{"live":true}'), rest


UPGRADES = {
    "websocket": b"upgrade: websocket\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"sec-websocket-version: 13\r\nconnection: upgrade\r\n",
    # what a JDK HttpClient sends on every request to a cleartext URL
    "h2c": b"upgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAAP__\r\n"
    b"connection: Upgrade, HTTP2-Settings\r\n",
}


def chunked(body: bytes) -> bytes:
    half = len(body) // 2
    return b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, body[:half], len(body) - half, body[half:])


def answers(received: bytes) -> list[tuple[bytes, dict[str, Any]]]:
    """The status lines and JSON bodies of the responses on one connection, in order."""
    found = []
    while received:
        head, _, rest = received.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        found.append((head.split(b"\r\n")[0], json.loads(rest[:length])))
        received = rest[length:]
    return found


@pytest.mark.parametrize("offer", UPGRADES)
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("split", [False, True], ids=["one-read", "body-later"])
def test_an_upgrade_offer_is_served_as_plain_http_with_its_body(
    hardened: str, offer: str, framing: str, split: bool
) -> None:
    """No WebSocket or HTTP/2 endpoint: a request that offers an upgrade is answered as the
    HTTP/1.1 request it also is, its whole body read (RFC 9110 §7.8), and the connection
    goes on with the next request. httptools skips the body of such a request: uvicorn
    answered the WebSocket offer with a 500 and gave the application an empty body."""
    if framing == "chunked":
        framed = b"transfer-encoding: chunked\r\n\r\n", chunked(GOOD)
    else:
        framed = b"content-length: %d\r\n\r\n" % len(GOOD), GOOD
    expect = b"expect: 100-continue\r\n" if split else b""
    head = b"POST /v2/models/ranker/infer HTTP/1.1\r\nhost: t\r\n" + UPGRADES[offer] + expect
    head += framed[0]
    after = b"GET /v2/health/live HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
    parts = urlsplit(hardened)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        if split:  # the head alone; once the application asks for the body, the rest
            sock.sendall(head)
            interim = b"HTTP/1.1 100 Continue\r\n\r\n"
            assert sock.recv(len(interim), socket.MSG_WAITALL) == interim
            sock.sendall(framed[1] + after)
        else:
            sock.sendall(head + framed[1] + after)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    (infer_status, infer), (live_status, live) = answers(received)
    assert infer_status.startswith(b"HTTP/1.1 200 "), received[:400]
    assert infer["outputs"][0]["name"] == "probability"
    assert live_status.startswith(b"HTTP/1.1 200 ")
    assert live == {"live": True}
    still_serves(hardened)


def test_connect_is_a_405_not_a_tunnel(hardened: str) -> None:
    answer = raw(hardened, b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n")
    ((status, body),) = answers(answer)
    assert status.startswith(b"HTTP/1.1 405 "), answer[:300]
    assert "not a proxy" in body["error"]
    still_serves(hardened)


@pytest.mark.parametrize(
    ("sent", "finding"),
    [
        (b"GET /v2 HTTP/1.1\r\nhost: t\r\nx-a: a\x01b\r\n\r\n", "header value"),
        (b"POST /v2/models/ranker/infer HTTP/1.1\r\ncontent-length: -1\r\n\r\n", "Content-Length"),
        (
            b"POST /v2/models/ranker/infer HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            "chunk",
        ),
        (b"BREW /v2 HTTP/1.1\r\nhost: t\r\n\r\n", "method"),
    ],
    ids=["control-char", "negative-length", "chunk-size", "method"],
)
def test_a_request_that_is_not_http_is_a_400_with_a_v2_body(
    hardened: str, sent: bytes, finding: str
) -> None:
    ((status, body),) = answers(raw(hardened, sent))
    assert status.startswith(b"HTTP/1.1 400 ")
    assert "not valid HTTP/1.1" in body["error"]
    assert finding.lower() in body["error"].lower()
    still_serves(hardened)


@pytest.mark.parametrize(
    ("repeated", "field"),
    [
        ([("inference-header-content-length", "5")], "inference-header-content-length"),
        ([("content-encoding", "identity")], "content-encoding"),
    ],
)
def test_a_framing_field_given_twice_is_a_400(
    hardened: str, repeated: list[tuple[str, str]], field: str
) -> None:
    """Two values for how to read the body: a proxy may have read one and torchrig the
    other, so neither is guessed (as HTTP parsers refuse two Content-Lengths)."""
    fields = [("content-type", "application/json"), *repeated, *repeated, ("x-note", "a")]
    if field == "inference-header-content-length":
        fields[2] = (field, str(len(GOOD)))
    response = httpx.post(f"{hardened}/v2/models/ranker/infer", content=GOOD, headers=fields)
    v2_error(response, 400, f"2 {field} header fields")
    # other fields may repeat
    fine = [("content-type", "application/json"), ("x-note", "a"), ("x-note", "b")]
    assert httpx.post(f"{hardened}/v2/models/ranker/infer", content=GOOD, headers=fine).is_success


def test_expect_100_continue_is_answered_before_the_body_is_sent(hardened: str) -> None:
    parts = urlsplit(hardened)
    body = GOOD
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v2/models/ranker/infer HTTP/1.1\r\nhost: t\r\nexpect: 100-continue\r\n"
            b"content-type: application/json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n" % len(body)
        )
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim
        sock.sendall(body)
        received = interim[len(b"HTTP/1.1 100 Continue\r\n\r\n") :]
        while chunk := sock.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 "), received[:300]
    assert b'"probability"' in received


def test_bodies_being_received_at_once_are_bounded_in_bytes(demo_repo: Path) -> None:
    """--max-body-buffer-mb: while a slow upload holds most of the budget, a large body
    more is a 503 with Retry-After (small ones pass); once the upload ends, it is served."""
    # (the default body timeout: the slow upload must outlive the requests it holds off)
    settings = ServeSettings(port=0, log_format="text", max_body_mb=1.0, max_body_buffer_mb=1.0)
    body = GOOD + b" " * 120_000  # past the 64 KiB that are never counted

    def chunked() -> httpx.Response:  # no Content-Length: held as it arrives
        parts = iter([body[:40_000], body[40_000:]])
        return httpx.post(f"{url}/v2/models/ranker/infer", content=parts)

    with running(demo_repo, settings) as (url, _):
        parts = urlsplit(url)
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as slow:
            slow.sendall(
                b"POST /v2/models/ranker/infer HTTP/1.1\r\nhost: t\r\nexpect: 100-continue\r\n"
                b"content-length: 1000000\r\n\r\n"
            )
            # the server asks for the body once it holds its place: 0.95 MiB of 1 MiB
            interim = b"HTTP/1.1 100 Continue\r\n\r\n"
            assert slow.recv(len(interim), socket.MSG_WAITALL) == interim
            refused = httpx.post(f"{url}/v2/models/ranker/infer", content=body)
            v2_error(refused, 503, "--max-body-buffer-mb")
            assert refused.headers["retry-after"] == "1"
            v2_error(chunked(), 503, "--max-body-buffer-mb")
            assert httpx.post(f"{url}/v2/models/ranker/infer", content=GOOD).is_success

        # the slow client went away: its bytes are no longer held
        def served() -> bool:
            answer = httpx.post(f"{url}/v2/models/ranker/infer", content=body)
            return answer.status_code == 200

        until(served, "the large request is served once the slow upload ended")
        answer = chunked()
        assert answer.status_code == 200, answer.text
