"""Clients that go away while their request waits: the request is dropped from the queue
before it takes model time (a real server, raw sockets closed by the test)."""

from __future__ import annotations

import json
import queue
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from doubles import until
from faults import body, gate, pack_faulty, seen
from serving import running
from torchrig.repository import BatchingConfig, ModelConfig
from torchrig.server.asgi_io import disconnect_probe
from torchrig.server.runner import build_state, make_server
from torchrig.settings import ServeSettings

TAG = 201


def send(url: str, values: list[float]) -> socket.socket:
    """Open a connection and send one inference request; the answer is read later (or never)."""
    parts = urlsplit(url)
    payload = json.dumps(body(values)).encode()
    sock = socket.create_connection((parts.hostname, parts.port), timeout=60)
    sock.sendall(
        (
            f"POST /v2/models/slow/infer HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        ).encode()
        + payload
    )
    return sock


def answer(sock: socket.socket) -> tuple[int, dict[str, object]]:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    sock.close()
    head, _, payload = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(payload)


def inflight(url: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith('torchrig_inflight_requests{model="slow"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_requests_of_clients_that_left_never_reach_the_model(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    config = ModelConfig(
        batching=BatchingConfig(max_batch_size=1, max_queue_delay_ms=0, preferred_batch_sizes=[1])
    )
    pack_faulty(repo, "slow", 1, tag=TAG, config=config)
    held = gate(TAG)
    with running(repo, ServeSettings(port=0, log_format="text")) as (url, state):
        batcher = state.registry.resolve("slow").batcher
        before = len(seen(TAG))  # packing and warm-up ran it too
        held.clear()
        try:
            first = send(url, [1.0])
            until(lambda: 1.0 in seen(TAG))  # the first request holds the model
            waiting = {value: send(url, [value]) for value in (2.0, 3.0, 4.0, 5.0, 6.0)}
            until(lambda: batcher.stats().queue_depth == 5)
            for value in (3.0, 5.0):  # these clients give up
                waiting.pop(value).close()
            until(lambda: inflight(url) == 4)  # the server saw them go
        finally:
            held.set()
        status, first_answer = answer(first)
        assert status == 200
        for value, sock in waiting.items():
            status, reply = answer(sock)
            assert status == 200, reply
            assert reply["outputs"][0]["data"] == [value, 0.0]  # type: ignore[index]
        stats = batcher.stats()
    assert first_answer["outputs"][0]["data"] == [1.0, 0.0]  # type: ignore[index]
    assert sorted(seen(TAG)[before:]) == [1.0, 2.0, 4.0, 6.0]  # 3 and 5 never ran
    assert stats.cancelled == 2
    assert stats.requests == 4


def test_the_probe_sees_a_client_leave_through_the_servers_own_protocol(tmp_path: Path) -> None:
    """`disconnect_probe` finds the flag uvicorn (with torchrig's HTTP protocol) sets when a
    connection closes: False while the client is there, True once it left."""
    probes: queue.Queue[Callable[[], bool] | None] = queue.Queue()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body"):
            pass
        probes.put(disconnect_probe(receive))
        await receive()  # the request stays open until its client leaves

    state = build_state(tmp_path, ServeSettings(port=0, log_format="text", grpc_port=-1))
    server = make_server(state)
    server.config.app = app
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        until(lambda: server.started)
        client = socket.create_connection(sock.getsockname(), timeout=30)
        client.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}")
        probe = probes.get(timeout=30)
        assert probe is not None
        assert probe() is False
        client.close()
        until(probe)
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()
