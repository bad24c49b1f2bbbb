"""CPU per request of torchrig's own request path, without sockets: the V2 app (ASGI)
driven in-process with the demo ranker's one-row V2 JSON request, in this thread's CPU
time, so the figure holds on a shared, busy machine where req/s and wall-clock latencies
do not.

What runs is everything the server does for an infer request from the ASGI call on
(routing, body read, decode, validation, registry, batcher, the program, metrics, tracing
ids, response encoding, the disconnect watch); what does not is uvicorn's HTTP parsing and
the socket syscalls (the bare ASGI app pays those too). Two loads:
  c=1   one request at a time: a batch per request
  c=64  64 requests submitted together, awaited together, repeatedly: batches form as
        under 64 connections
Printed: the median over `--samples` samples of CPU µs per request, and the batches per
request. `--profile FILE` also writes a cProfile of one more sample at each load, timed in
this thread's CPU time (call counts are exact; times include the profiler's own).

Run: `python benchmarks/request_path.py [--requests 2048] [--samples 5] [--profile out.prof]
[--trace off]` (`--trace off`: the ranker runs its exported module, not a TorchScript trace).

`--versus-bare` compares torchrig's path with the bare ASGI app's (serve_compare/asgi_app.py,
the baseline of serve_tail.py) in this same process, on the same request: `--pairs` pairs
of blocks of `--block` requests, one block of each app in turn, at c=1; printed: each app's
median CPU us per request and the median and range of the per-pair ratios. Both apps share
the process, the interpreter and its caches, and each pair lies a second apart, so the
ratio holds on a box whose speed drifts (the absolute figures do not).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any


def ranker_body() -> bytes:
    from torchrig.demo import DemoRanker

    dense, sparse = DemoRanker.example_inputs(2)
    request = {
        "inputs": [
            {"name": "dense", "shape": [1, 13], "datatype": "FP32", "data": dense[:1].tolist()},
            {"name": "sparse", "shape": [1, 26], "datatype": "INT64", "data": sparse[:1].tolist()},
        ]
    }
    return json.dumps(request, separators=(",", ":")).encode()


class Client:
    """One in-process HTTP/1.1 POST through the ASGI app, as uvicorn would call it."""

    def __init__(self, app: Any, body: bytes) -> None:
        self.app = app
        self.body = body
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v2/models/ranker/infer",
            "raw_path": b"/v2/models/ranker/infer",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"127.0.0.1:8000"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
        }

    async def post(self) -> int:
        cycle = _Cycle(self.body)
        await self.app(dict(self.scope), cycle.receive, cycle.send)
        return cycle.status


class _Cycle:
    """One request's ASGI channel, shaped as uvicorn's request cycle is: `receive` is a
    method of an object with a `disconnected` flag (which the server reads instead of
    watching for the disconnect message, see torchrig.server.asgi_io.disconnect_probe)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.disconnected = False
        self.sent_body = False
        self.status = 0
        self.done = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        if not self.sent_body:
            self.sent_body = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.done.wait()  # a disconnect watch waits here until the response is sent
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif not message.get("more_body", False):
            self.done.set()


async def run(args: argparse.Namespace) -> int:
    from torchrig.demo import build_demo_repository
    from torchrig.server.app import V2App
    from torchrig.server.runner import build_state
    from torchrig.settings import ServeSettings

    work = Path(tempfile.mkdtemp(prefix="torchrig-request-path-"))
    repo = build_demo_repository(work / "repo")
    config = repo / "ranker" / "config.toml"
    config.write_text(config.read_text().replace('trace = "auto"', f'trace = "{args.trace}"'))
    state = build_state(repo, ServeSettings())
    app = V2App(state)
    await state.lifespan_hooks["startup"]()
    client = Client(app, ranker_body())
    batcher = state.registry.resolve("ranker").batcher  # type: ignore[union-attr]

    async def sample(concurrency: int) -> tuple[float, float]:
        batches = batcher.stats().batches
        started = time.thread_time()
        for _ in range(args.requests // concurrency):
            statuses = await asyncio.gather(*(client.post() for _ in range(concurrency)))
            if any(s != 200 for s in statuses):
                raise RuntimeError(f"statuses {set(statuses)}")
        spent = time.thread_time() - started
        count = args.requests // concurrency * concurrency
        return spent / count * 1e6, (batcher.stats().batches - batches) / count

    if args.versus_bare:
        await versus_bare(client, args)
        await state.lifespan_hooks["shutdown"]()
        return 0
    print(f"inline batches: {batcher.inline}; program traced: "
          f"{getattr(batcher.executor.primary.program, 'traced', None)}")  # fmt: skip
    for concurrency in (1, 64):
        await sample(concurrency)  # warm
        results = [await sample(concurrency) for _ in range(args.samples)]
        cpu = statistics.median(r[0] for r in results)
        per = statistics.median(r[1] for r in results)
        print(f"c={concurrency:<3} CPU {cpu:7.1f} us/request   batches/request {per:.3f}")
        if args.profile:
            profile = cProfile.Profile(time.thread_time)  # CPU, not wall (busy machines)
            profile.enable()
            await sample(concurrency)
            profile.disable()
            out = args.profile.with_name(f"{args.profile.stem}_c{concurrency}.prof")
            profile.dump_stats(out)
            print(f"      profile: {out}")
    await state.lifespan_hooks["shutdown"]()
    return 0


def bare_app(work: Path) -> Any:
    """serve_compare's bare ASGI callable, loaded with the demo ranker's weights."""
    import torch

    from torchrig.demo import ranker

    module, _ = ranker()
    torch.save(module.state_dict(), work / "ranker_state.pt")
    os.environ["TORCHRIG_BENCH_MODELS_PY"] = str(sys.modules[type(module).__module__].__file__)
    os.environ["TORCHRIG_BENCH_WEIGHTS"] = str(work / "ranker_state.pt")
    here = Path(__file__).resolve().parent / "serve_compare"
    sys.path.insert(0, str(here))
    import asgi_app  # type: ignore[import-not-found]

    return asgi_app.app


async def versus_bare(ours: Client, args: argparse.Namespace) -> None:
    bare = Client(bare_app(Path(tempfile.mkdtemp(prefix="torchrig-request-path-bare-"))), ours.body)

    async def block(client: Client) -> float:
        started = time.thread_time()
        for _ in range(args.block):
            if await client.post() != 200:
                raise RuntimeError("a request failed")
        return (time.thread_time() - started) / args.block * 1e6

    for client in (ours, bare):  # warm
        await block(client)
    pairs = [(await block(ours), await block(bare)) for _ in range(args.pairs)]
    ratios = [mine / theirs for mine, theirs in pairs]
    print(
        f"c=1 in process, {args.pairs} pairs of {args.block} requests: torchrig "
        f"{statistics.median(p[0] for p in pairs):.1f} us/request, bare ASGI app "
        f"{statistics.median(p[1] for p in pairs):.1f}; torchrig / bare "
        f"{statistics.median(ratios):.2f}x (range {min(ratios):.2f}-{max(ratios):.2f})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=2048, help="requests per sample")
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--profile", type=Path, help="write cProfile stats next to this name")
    parser.add_argument(
        "--trace", choices=("auto", "off"), default="auto", help="the ranker's config `trace`"
    )
    parser.add_argument(
        "--versus-bare", action="store_true", help="paired blocks against the bare ASGI app"
    )
    parser.add_argument("--pairs", type=int, default=15, help="--versus-bare: block pairs")
    parser.add_argument("--block", type=int, default=400, help="--versus-bare: requests/block")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    try:
        import uvloop

        return uvloop.run(run(args))
    except ImportError:
        return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
