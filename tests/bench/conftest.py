"""A real torchrig server over the demo repository, a stub V2 server that answers what a
test needs (503s, chunked bodies, not V2 at all), and the CLI run as a user runs it."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from cli_runs import torchrig
from serving import running
from torchrig.demo import build_demo_repository
from torchrig.settings import ServeSettings

ECHO_METADATA = {
    "name": "echo",
    "versions": ["1"],
    "platform": "stub",
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}],
}
ECHO_ANSWER = {
    "model_name": "echo",
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 0, 0]}],
}


@pytest.fixture(scope="session")
def demo_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_repository(tmp_path_factory.mktemp("bench") / "models")


@pytest.fixture(scope="session")
def server_url(demo_repo: Path) -> Iterator[str]:
    with running(demo_repo, ServeSettings(port=0, log_format="text")) as (url, _):
        yield url


Bench = Callable[..., subprocess.CompletedProcess[str]]


def _bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`torchrig bench ARGS` in a child process, as a user runs it."""
    return torchrig("bench", *args, env={"COLUMNS": "200"}, timeout_s=timeout)


@pytest.fixture
def bench() -> Bench:
    """`torchrig bench ARGS` in a child process: (*args) -> CompletedProcess."""
    return _bench


@pytest.fixture
def bench_json() -> Callable[..., dict[str, Any]]:
    """`torchrig bench ARGS --json`, which must exit 0 with a bench document."""
    return _bench_json


def _bench_json(*args: str) -> dict[str, Any]:
    proc = _bench(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    document: dict[str, Any] = json.loads(proc.stdout)
    assert document["kind"] == "bench"
    assert document["schema_version"] == 1
    return document


Infer = Callable[[Any, Any], Any]  # (receive, send) -> awaitable answering one infer request


def _app(infer: Infer, *, v2: bool) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if not v2:
            await _send(send, 404, b"<html>not found</html>", "text/html")
        elif path == "/v2":
            server = {"name": "stub", "version": "0", "extensions": []}
            await _send(send, 200, json.dumps(server).encode())
        elif path == "/v2/models/echo":
            await _send(send, 200, json.dumps(ECHO_METADATA).encode())
        elif path == "/v2/models/echo/infer":
            while (await receive()).get("more_body"):
                pass
            await infer(receive, send)
        else:
            await _send(send, 404, b'{"error": "no such model"}')

    return app


async def _send(send: Any, status: int, body: bytes, kind: str = "application/json") -> None:
    headers = [(b"content-type", kind.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def unavailable(receive: Any, send: Any) -> None:
    """Every infer request: 503 with a V2 error body."""
    await _send(send, 503, b'{"error": "stub: the queue is full"}')


async def chunked(receive: Any, send: Any) -> None:
    """Every infer request: 200 with a body in two chunks (Transfer-Encoding: chunked)."""
    body = json.dumps(ECHO_ANSWER).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body[:10], "more_body": True})
    await send({"type": "http.response.body", "body": body[10:]})


STALL_S = 0.5  # how long the "stall" stub holds its first infer request


def stall_first() -> Infer:
    """The first infer request is held STALL_S (a stalling server: a GC pause, a
    recompile), every later one answered at once."""
    held = [False]

    async def infer(receive: Any, send: Any) -> None:
        if not held[0]:
            held[0] = True
            await asyncio.sleep(STALL_S)
        await _send(send, 200, json.dumps(ECHO_ANSWER).encode())

    return infer


async def hang(receive: Any, send: Any) -> None:
    """Every infer request: no answer until the client goes away."""
    while (await receive())["type"] != "http.disconnect":
        pass


@pytest.fixture
def stub_server() -> Callable[[str], Any]:
    """`stub_server(mode)`: a context manager yielding the URL of a real HTTP server
    (uvicorn, OS-assigned port) that serves model "echo" and answers every infer request
    with 503 (mode "unavailable") or a chunked 200 ("chunked"), holds the first one
    STALL_S ("stall") or every one until the client leaves ("hang"), or is no V2 server
    at all ("not_v2": 404 everywhere)."""
    return _stub_server


@contextmanager
def _stub_server(mode: str) -> Iterator[str]:
    infer = {
        "unavailable": unavailable,
        "chunked": chunked,
        "stall": stall_first(),
        "hang": hang,
        "not_v2": unavailable,
    }[mode]
    config = uvicorn.Config(_app(infer, v2=mode != "not_v2"), log_config=None, access_log=False)
    server = uvicorn.Server(config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the stub server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
