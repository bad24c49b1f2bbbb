"""Does the server's memory stay flat over a long run? RSS while requests flow.

An in-process `torchrig serve` (real uvicorn on a loopback port, poll mode) over the
demo repository; concurrent httpx clients send ranker requests. With `--swap-every N`
a new ranker version is published every N requests and the previous one removed, so
versions are loaded, hot-swapped and released all along (where leaks hide). RSS of
this process (server and clients together) is printed every `--interval` requests;
growth = last sample - first sample after warm-up. Median over `--runs` runs.

Run: `python benchmarks/serve_memory.py [--requests 20000] [--runs 3] [--swap-every 5000]`
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import shutil
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from torchrig.demo import build_demo_repository
from torchrig.server.runner import build_state, make_server
from torchrig.settings import ServeSettings

ROW = {
    "inputs": [
        {"name": "dense", "datatype": "FP32", "shape": [1, 13], "data": [0.5] * 13},
        {"name": "sparse", "datatype": "INT64", "shape": [1, 26], "data": list(range(26))},
    ]
}


def rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def publish(repo: Path, version: int) -> None:
    """Publish ranker `version` (a copy of version 1, manifest last) and drop the previous."""
    staging = repo / "ranker" / f".tmp-{version}"
    shutil.copytree(repo / "ranker" / "1", staging)
    manifest = json.loads((staging / "manifest.json").read_text())
    manifest["version"] = version
    (staging / "manifest.json").write_text(json.dumps(manifest))
    staging.rename(repo / "ranker" / str(version))
    if version > 2:
        shutil.rmtree(repo / "ranker" / str(version - 1), ignore_errors=True)


class Server:
    """The real server in a thread on an OS-assigned port."""

    def __init__(self, repo: Path, poll_s: float) -> None:
        settings = ServeSettings(
            port=0,
            log_format="text",
            log_level="warning",
            control_mode="poll",
            poll_interval_s=poll_s,
        )
        self.state = build_state(repo, settings, cache_dir=repo.parent / "cache")
        self.server = make_server(self.state)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(60)
        self.sock.close()


async def drive(url: str, total: int, clients: int, on_count: Any) -> int:
    """Send `total` requests from `clients` concurrent clients; return the failures."""
    sent = 0
    failures = 0

    async def client() -> None:
        nonlocal sent, failures
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            while sent < total:
                sent += 1
                on_count(sent)
                response = await http.post("/v2/models/ranker/infer", json=ROW)
                failures += response.status_code != 200

    await asyncio.gather(*(client() for _ in range(clients)))
    return failures


def one_run(args: argparse.Namespace, run: int) -> float:
    workdir = Path(tempfile.mkdtemp(prefix="torchrig-memory-"))
    try:
        repo = build_demo_repository(workdir / "models")
        samples: list[tuple[int, int]] = []
        published = [1]
        with Server(repo, args.poll_s) as server:

            def on_count(count: int) -> None:
                if args.swap_every and count % args.swap_every == 0:
                    published.append(published[-1] + 1)
                    publish(repo, published[-1])
                if count % args.interval == 0:
                    gc.collect()
                    samples.append((count, rss_bytes()))
                    print(f"  run {run} requests {count:>7}: RSS {samples[-1][1] / 2**20:8.1f} MiB")

            failures = asyncio.run(drive(server.url, args.requests, args.clients, on_count))
            serving = server.state.registry.resolve("ranker").version
        print(f"  run {run}: published ranker versions 1..{published[-1]}, {serving} serving")
        if failures:
            print(f"  run {run}: {failures} failed requests")
        warm = [rss for count, rss in samples if count > args.warmup]
        return (warm[-1] - warm[0]) / 2**20 if len(warm) >= 2 else 0.0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--interval", type=int, default=2000, help="requests between samples")
    parser.add_argument("--warmup", type=int, default=2000, help="requests before the baseline")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--swap-every", type=int, default=5000, help="0: never swap versions")
    parser.add_argument("--poll-s", type=float, default=0.5)
    args = parser.parse_args()
    growths = [one_run(args, run) for run in range(1, args.runs + 1)]
    print(
        f"RSS growth after warm-up over {args.requests} requests: median "
        f"{statistics.median(growths):.1f} MiB (runs: {', '.join(f'{g:.1f}' for g in growths)})"
    )


if __name__ == "__main__":
    main()
