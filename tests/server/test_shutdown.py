"""`torchrig serve` as a real process: startup URL, SIGTERM turns readiness off at once and
drains accepted requests, and the drain timeout ends a drain that would not."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import torch

from doubles import until
from torchrig.packaging import pack
from torchrig.repository import BatchingConfig, ModelConfig


def start(repo: Path, drain_timeout_s: float = 20) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHRIG_")}
    errors = (repo.parent / "stderr.txt").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torchrig",
            "serve",
            str(repo),
            "--port",
            "0",
            "--grpc-port",
            "0",
            "--log-format",
            "json",
            "--drain-timeout-s",
            str(drain_timeout_s),
        ],
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
        env=env,
    )
    errors.close()  # the child holds its own descriptor
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        record = json.loads(line)
        if record.get("url"):
            return proc, str(record["url"])
    proc.kill()
    proc.wait(10)
    proc.stdout.close()
    raise AssertionError(f"no serving line; stderr: {(repo.parent / 'stderr.txt').read_text()}")


def test_sigterm_answers_every_accepted_request(slow_repo: Path) -> None:
    proc, url = start(slow_repo)
    try:
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200
        results: list[Any] = []

        def call(i: int) -> None:
            body = {
                "inputs": [
                    {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [float(i)] * 4}
                ]
            }
            try:
                response = httpx.post(f"{url}/v2/models/slow/infer", json=body, timeout=60)
                results.append((i, response.status_code, response.json()))
            except httpx.HTTPError as exc:  # pragma: no cover - reported by the assert
                results.append((i, None, str(exc)))

        threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()

        def inflight() -> float:
            for line in httpx.get(f"{url}/metrics").text.splitlines():
                if line.startswith("torchrig_inflight_requests{") and 'model="slow"' in line:
                    return float(line.rsplit(" ", 1)[1])
            return 0.0

        deadline = time.monotonic() + 30
        while inflight() < 8:
            assert time.monotonic() < deadline, "requests did not reach the server"
        prober = ReadinessProber(url)
        prober.start()
        until(lambda: prober.answers, "a readiness answer before the signal")
        sending = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()  # the signal is pending in the server from here on
        for thread in threads:
            thread.join(60)
        prober.join(60)
        before = [status for _, done, status in prober.answers if done < sending]
        after = [status for sent, _, status in prober.answers if sent > signalled]
        assert before, prober.answers
        assert set(before) == {200}, prober.answers
        # every probe sent after SIGTERM: 503 while the listener is still open, then
        # refused; never "ready" (the window before the listener closes is up to 0.1 s)
        assert set(after) <= {503, None}, prober.answers
        assert not prober.unexpected, prober.unexpected
        assert prober.answers[-1][2] is None  # it probed until the listener closed
        assert len(results) == 8
        for i, status, body in sorted(results):
            assert status == 200, (i, status, body)
            assert body["outputs"][0]["data"] == [float(i) + 1] * 4
        # uvicorn re-raises the signal once drained: the process ends "killed by SIGTERM"
        assert proc.wait(60) in (0, -signal.SIGTERM)
        assert proc.stdout is not None
        log = proc.stdout.read()
        assert "draining in-flight requests" in log
        assert "models released" in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


class PlusOne(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1


class ReadinessProber(threading.Thread):
    """Probes /v2/health/ready on a new connection each time, as a kubelet does, until the
        server refuses connections; records each probe's monotonic send and answer times and
    its status (None: refused, or closed unanswered).
        Plain sockets: a probe takes about a millisecond, so several land between the signal
        and the moment the server closes its listener."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        parts = urlsplit(url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.answers: list[tuple[float, float, int | None]] = []  # sent, answered, status
        self.unexpected: list[bytes] = []

    def probe(self) -> int | None:
        request = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        try:
            with socket.create_connection(self.address, timeout=10) as sock:
                sock.sendall(request)
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError:
            return None
        head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
        if not head:
            return None  # accepted, then closed unanswered as the server shut down
        status = int(head.split(b" ", 2)[1])
        if status == 503 and b"shutting down" not in body:
            self.unexpected.append(body)  # a 503 for another reason: reported by the test
        return status

    def run(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            sent = time.monotonic()
            status = self.probe()
            self.answers.append((sent, time.monotonic(), status))
            if status is None:
                return


@pytest.mark.parametrize("drain_timeout_s", [2, 0.5])
def test_the_drain_timeout_ends_a_drain_that_would_not(
    tmp_path: Path, drain_timeout_s: float
) -> None:
    """A request that would be held a minute: the server gives up on it after
    --drain-timeout-s, still releases the models and exits. A fraction of a second is a
    timeout too (it was truncated to 0, which uvicorn took as "wait for ever")."""
    root = tmp_path / "models"
    config = ModelConfig(
        batching=BatchingConfig(max_batch_size=64, max_queue_delay_ms=60_000), warmup=False
    )
    pack(PlusOne(), (torch.zeros(2, 4),), name="held", repository=root, version=1,
         output_names=["y"], config=config)  # fmt: skip
    proc, url = start(root, drain_timeout_s=drain_timeout_s)
    outcome: list[Any] = []

    def call() -> None:
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1] * 4}]}
        try:
            outcome.append(httpx.post(f"{url}/v2/models/held/infer", json=body, timeout=120))
        except httpx.TransportError as exc:
            outcome.append(exc)

    try:
        client = threading.Thread(target=call)
        client.start()

        def held() -> bool:
            text = httpx.get(f"{url}/metrics").text
            return 'torchrig_inflight_requests{model="held"} 1.0' in text

        until(held, "the request in flight")
        proc.send_signal(signal.SIGTERM)
        # well before the minute the request would be held: the drain timeout ended it
        assert proc.wait(45) in (0, -signal.SIGTERM)
        client.join(30)
        (answer,) = outcome
        assert not (isinstance(answer, httpx.Response) and answer.status_code == 200), answer
        assert proc.stdout is not None
        log = proc.stdout.read()
        assert "timeout graceful shutdown exceeded" in log
        assert "models released" in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
