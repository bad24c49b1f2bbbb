"""`torchrig serve` as a real process: startup URL, SIGTERM drains accepted requests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx


def start(repo: Path) -> tuple[subprocess.Popen[str], str]:
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
            "--log-format",
            "json",
            "--drain-timeout-s",
            "20",
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
        proc.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(60)
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
