"""torchrig serve against the bare ASGI app, at 64 connections and at 1, in one run: the
goals of adaptive batching and of the tail-latency work (issue #17).

Servers and load are serve_compare.py's (the demo ranker, one row per V2 JSON request,
wrk with exact percentiles; 1 torch thread per server): `torchrig serve` of the demo
repository (no queue delay: a batch starts when the worker is free) and the bare uvicorn
ASGI callable that runs the module per request on the event loop (no batching, no
threads). Each configuration is measured `--rounds` times, servers interleaved, and the
medians compared. Goals printed at the end:
  64 connections: torchrig req/s >= 1.0x the bare app's, p99 <= 2x the bare app's
  1 connection:   torchrig p50 <= the bare app's + 0.2 ms

Run: `python benchmarks/serve_tail.py [--duration 8] [--rounds 3]` (about 20 s per server
and round; wrk must be on PATH for exact percentiles).
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from serve_compare import (  # the scripts beside this one (this directory is on sys.path)
    Result,
    Setup,
    build_servers,
    fmt,
    measure,
    median_result,
    parse_args,
)


def args_for(connections: int, argv: argparse.Namespace) -> argparse.Namespace:
    args = copy.copy(argv)
    args.connections = connections
    args.wrk_threads = min(argv.wrk_threads, connections)
    return args


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse_args([*(argv or sys.argv[1:]), "--only", "torchrig,asgi"])
    args.wrk = shutil.which("wrk") is not None
    from torchrig.demo import ranker

    torch.set_num_threads(args.torch_threads)
    module, (dense, sparse) = ranker()
    rows = [(dense[i : i + 1], sparse[i : i + 1]) for i in (0, 1)]
    with torch.inference_mode():
        expected = [float(module(d, s)[0, 0]) for d, s in rows]
    base_env = dict(os.environ)
    threads = str(args.torch_threads)
    base_env.update(
        OMP_NUM_THREADS=threads,
        MKL_NUM_THREADS=threads,
        TORCHRIG_BENCH_THREADS=threads,
        TORCHRIG_BENCH_MODELS_PY=str(sys.modules[type(module).__module__].__file__),
        PYTHONUNBUFFERED="1",
        PYTHONWARNINGS="ignore",
    )
    load = "wrk" if args.wrk else "NO wrk on PATH: the asyncio generator (weaker, inexact)"
    print(f"cores: {os.cpu_count()}; torch threads per server: {threads}; load: {load}")
    work = Path(tempfile.mkdtemp(prefix="torchrig-serve-tail-"))
    base_env["TORCHRIG_BENCH_WEIGHTS"] = str(work / "ranker_state.pt")
    setup = Setup(work, args, rows, expected)
    medians: dict[tuple[int, str], Result] = {}
    try:
        servers = build_servers(setup, args.selected)
        for connections in (64, 1):
            setup.args = args_for(connections, args)
            rounds: dict[str, list[Result]] = {s.name: [] for s in servers}
            for round_no in range(1, args.rounds + 1):
                for server in servers:
                    result = measure(server, setup, base_env)
                    rounds[server.name].append(result)
                    print(
                        f"c={connections} round {round_no} {server.name}: "
                        f"{fmt(result.rps, ',.0f')} req/s, p50 {fmt(result.p50_ms, '.2f')} ms, "
                        f"p99 {fmt(result.p99_ms, '.1f')} ms, "
                        f"server CPU {fmt(result.cpu_us, '.0f')} us/req {result.note}",
                        flush=True,
                    )
            for name, results in rounds.items():
                medians[(connections, name)] = median_result(results)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print("connections  server    req/s   p50 ms   p99 ms  CPU us/req  (medians of rounds)")
    for (connections, name), r in medians.items():
        print(
            f"{connections:>11}  {name:8} {fmt(r.rps, '>6,.0f')} {fmt(r.p50_ms, '>8.2f')} "
            f"{fmt(r.p99_ms, '>8.1f')} {fmt(r.cpu_us, '>11.0f')}"
        )
    ours, bare = medians[(64, "torchrig")], medians[(64, "asgi")]
    one, bare_one = medians[(1, "torchrig")], medians[(1, "asgi")]
    if None in (ours.rps, bare.rps, ours.p99_ms, bare.p99_ms, one.p50_ms, bare_one.p50_ms):
        print("a server was not measured: no goals")
        return 1
    rps_ratio = ours.rps / bare.rps  # type: ignore[operator]
    p99_ratio = ours.p99_ms / bare.p99_ms  # type: ignore[operator]
    p50_delta = one.p50_ms - bare_one.p50_ms  # type: ignore[operator]
    print(f"c=64 req/s torchrig / bare: {rps_ratio:.2f}x (goal >= 1.0): "
          f"{'met' if rps_ratio >= 1.0 else 'MISSED'}")  # fmt: skip
    print(f"c=64 p99 torchrig / bare: {p99_ratio:.2f}x (goal <= 2.0): "
          f"{'met' if p99_ratio <= 2.0 else 'MISSED'}")  # fmt: skip
    print(f"c=1 p50 torchrig - bare: {p50_delta:+.2f} ms (goal <= +0.2 ms): "
          f"{'met' if p50_delta <= 0.2 else 'MISSED'}")  # fmt: skip
    print(f"whole run: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
