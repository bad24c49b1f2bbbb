"""The load generator's own ceiling: `torchrig bench` against a server that does nothing.

A trivial V2 server (asyncio + uvloop + httptools, in its own process(es): it answers
GET /v2, the model metadata of a one-input model, and every POST with the same fixed V2
response) is loaded by the generator's closed loop at `--concurrency` with 1 and 2 load
processes (`--load-processes`); each setting runs `--runs` times and the median requests/s
is printed, with the generator's CPU time per request and the CPU the server process(es)
used: when the server is busy near 100 % of its cores, the figure is the server's limit and
the generator's lies above it.

`--clients` also measures the HTTP clients the generator could have used, same loop,
same server, one process each: httpx.AsyncClient, aiohttp, asyncio streams, and the
generator's own (asyncio Protocol + httptools), on uvloop.

Run: `python benchmarks/bench_ceiling.py [--concurrency 64] [--duration 3] [--runs 3]
[--server-processes 1] [--load-processes 1,2] [--clients]` (on a 16-core machine:
`--server-processes 8 --load-processes 1,2,4`). About 30 s with the defaults (1 min with --clients).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

BODY = (
    b'{"model_name":"echo","model_version":"1","outputs":'
    b'[{"name":"y","datatype":"FP32","shape":[1,4],"data":[0.5,0.5,0.5,0.5]}]}'
)
METADATA = (
    b'{"name":"echo","versions":["1"],"platform":"trivial","inputs":'
    b'[{"name":"x","datatype":"FP32","shape":[-1,4]}],'
    b'"outputs":[{"name":"y","datatype":"FP32","shape":[-1,4]}]}'
)
SERVER = b'{"name":"trivial","version":"0","extensions":["binary_tensor_data"]}'


def _response(body: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    return head % len(body) + body


def serve(fd: int) -> None:
    """The trivial server on an inherited listening socket (one process of several)."""
    import httptools
    import uvloop

    answers = {b"/v2": _response(SERVER), b"/v2/models/echo": _response(METADATA)}
    infer = _response(BODY)

    class Trivial(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)
            self.url = b""

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_url(self, url: bytes) -> None:
            self.url = url

        def on_message_complete(self) -> None:
            self.transport.write(answers.get(self.url, infer))

    async def main() -> None:
        sock = socket.socket(fileno=fd)
        server = await asyncio.get_running_loop().create_server(Trivial, sock=sock, backlog=4096)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the processes so far (Linux /proc)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and of its finished (joined) children: the generator."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def measure_generator(
    url: str, concurrency: int, processes: int, duration: float
) -> tuple[float, float]:
    """(requests/s, generator CPU µs per request) of one closed-loop run."""
    from torchrig.bench.loadgen import LoadPlan
    from torchrig.bench.parallel import run_levels
    from torchrig.bench.results import Level
    from torchrig.bench.target import prepare

    target = prepare(url, "echo", version=None, batch=1, shapes={}, binary=True)
    plan = LoadPlan(endpoint=target.endpoint, requests=target.requests, warmup_s=0.5,
                    duration_s=duration)  # fmt: skip
    cpu = _own_cpu_seconds()
    (result,) = run_levels(
        plan, [Level(concurrency=concurrency)], rows_per_request=1, processes=processes
    )
    cpu = _own_cpu_seconds() - cpu
    if result.errors or not result.ok:
        raise SystemExit(f"the trivial server answered errors: {result.errors_by_status}")
    # the CPU covers the warm-up and set-up too: an upper bound on the cost of a request
    requests = result.requests_per_s * (plan.warmup_s + plan.duration_s)
    return result.requests_per_s, cpu / requests * 1e6


# ---- the other clients, for the choice of HTTP client (--clients) --------------------------


async def _closed_loop(
    make_worker: Callable[[], Coroutine[Any, Any, Callable[[], Coroutine[Any, Any, None]]]],
    concurrency: int,
    duration: float,
) -> float:
    done = 0

    async def worker() -> None:
        nonlocal done
        one = await make_worker()
        end = time.monotonic() + duration
        while time.monotonic() < end:
            await one()
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.monotonic() - started)


async def _httpx(url: str, body: bytes, concurrency: int, duration: float) -> float:
    import httpx

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(limits=limits) as client:

        async def make() -> Callable[[], Coroutine[Any, Any, None]]:
            async def one() -> None:
                (await client.post(url, content=body)).raise_for_status()

            return one

        return await _closed_loop(make, concurrency, duration)


async def _aiohttp(url: str, body: bytes, concurrency: int, duration: float) -> float:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:

        async def make() -> Callable[[], Coroutine[Any, Any, None]]:
            async def one() -> None:
                async with s.post(url, data=body) as response:
                    await response.read()

            return one

        return await _closed_loop(make, concurrency, duration)


async def _streams(host: str, port: int, raw: bytes, concurrency: int, duration: float) -> float:
    async def make() -> Callable[[], Coroutine[Any, Any, None]]:
        reader, writer = await asyncio.open_connection(host, port)

        async def one() -> None:
            writer.write(raw)
            head = (await reader.readuntil(b"\r\n\r\n")).lower()
            start = head.index(b"content-length:") + 15
            await reader.readexactly(int(head[start : head.index(b"\r\n", start)]))

        return one

    return await _closed_loop(make, concurrency, duration)


async def _ours(endpoint: Any, raw: bytes, concurrency: int, duration: float) -> float:
    from torchrig.bench.client import Connection

    async def make() -> Callable[[], Coroutine[Any, Any, None]]:
        connection = await Connection.open(endpoint, 10.0)

        async def one() -> None:
            await connection.send(raw, 10.0)

        return one

    return await _closed_loop(make, concurrency, duration)


def compare_clients(url: str, concurrency: int, duration: float, runs: int) -> None:
    import uvloop

    from torchrig.bench.client import encode_request, parse_url

    endpoint = parse_url(url)
    infer = f"{url}/v2/models/echo/infer"
    body = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}'
    raw = encode_request(endpoint, "POST", "/v2/models/echo/infer", body)
    clients: dict[str, Callable[[], Coroutine[Any, Any, float]]] = {
        "httpx.AsyncClient": lambda: _httpx(infer, body, concurrency, duration),
        "aiohttp": lambda: _aiohttp(infer, body, concurrency, duration),
        "asyncio streams": lambda: _streams(
            endpoint.host, endpoint.port, raw, concurrency, duration
        ),
        "Protocol + httptools (ours)": lambda: _ours(endpoint, raw, concurrency, duration),
    }
    print(f"\nHTTP clients, one process on uvloop, concurrency {concurrency}:")
    for name, run in clients.items():
        try:
            figures = [uvloop.run(run()) for _ in range(runs)]
        except ImportError as exc:
            print(f"  {name:30s} not installed ({exc.name})")
            continue
        print(f"  {name:30s} {statistics.median(figures):>10,.0f} req/s (median of {runs})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--server-processes", type=int, default=1)
    parser.add_argument("--load-processes", default="1,2", help="e.g. 1,2,4 on a big machine")
    parser.add_argument("--clients", action="store_true", help="also compare HTTP clients")
    parser.add_argument("--serve-fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fd is not None:
        serve(args.serve_fd)
        return

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    command = [sys.executable, __file__, "--serve-fd", str(listener.fileno())]
    servers = [
        subprocess.Popen(command, pass_fds=[listener.fileno()])
        for _ in range(args.server_processes)
    ]
    try:
        print(
            f"trivial V2 server: {args.server_processes} process(es) at {url}; "
            f"{os.cpu_count()} CPUs; closed loop, concurrency {args.concurrency}, "
            f"{args.duration:g} s per run, median of {args.runs}"
        )
        rows = []
        for processes in [int(p) for p in args.load_processes.split(",")]:
            figures, costs, busy = [], [], []
            for _ in range(args.runs):
                cpu, wall = cpu_seconds([s.pid for s in servers]), time.monotonic()
                rate, cost = measure_generator(url, args.concurrency, processes, args.duration)
                used = cpu_seconds([s.pid for s in servers]) - cpu
                figures.append(rate)
                costs.append(cost)
                busy.append(used / (time.monotonic() - wall) / args.server_processes)
            rows.append(
                (
                    processes,
                    statistics.median(figures),
                    statistics.median(costs),
                    statistics.median(busy),
                )
            )
        print(
            f"\n{'load processes':>15} {'requests/s':>12} {'generator CPU/request':>22} "
            f"{'= per core':>12} {'server CPU busy':>16}"
        )
        for processes, rate, cost, busy_share in rows:
            print(
                f"{processes:>15} {rate:>12,.0f} {cost:>19.1f} µs {1e6 / cost:>10,.0f}/s "
                f"{busy_share:>16.0%}"
            )
        if args.clients:
            compare_clients(url, args.concurrency, args.duration, args.runs)
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)
        listener.close()


if __name__ == "__main__":
    main()
