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

`--slices N` measures the other way, for a machine whose speed drifts within seconds (a
shared VM): both servers run at once, and each takes a `--duration`-second slice of load
in turn (1 s is enough), N times per concurrency; printed are the medians of the per-slice
ratios and differences, each taken from two slices a second apart.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from serve_compare import (  # the scripts beside this one (this directory is on sys.path)
    READY_DEADLINE_S,
    Result,
    Server,
    Setup,
    build_servers,
    fmt,
    measure,
    median_result,
    parse_args,
    run_load,
    stop,
    verify,
    wait_ready,
)


def args_for(connections: int, argv: argparse.Namespace) -> argparse.Namespace:
    args = copy.copy(argv)
    args.connections = connections
    args.wrk_threads = min(argv.wrk_threads, connections)
    return args


def sliced(servers: list[Server], setup: Setup, base_env: dict[str, str], slices: int) -> int:
    """`--slices`: every server up at once, load in alternating slices (module doc)."""
    processes = []
    work = setup.work
    try:
        for server in servers:
            with (work / f"{server.name}.log").open("wb") as out:
                processes.append(
                    subprocess.Popen(
                        server.command,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env={**base_env, **server.env},
                        cwd=work,
                        start_new_session=True,
                    )
                )
        for server, process in zip(servers, processes, strict=True):
            base = f"http://127.0.0.1:{server.port}"
            wait_ready(process, base + server.ready_path, READY_DEADLINE_S)
            wrong = verify(server, base)
            if wrong:
                print(f"{server.name}: wrong answer, not measured: {wrong}")
                return 1
            (work / f"{server.name}.body").write_bytes(server.bodies[0].data)
        ours, bare = servers  # torchrig, then the bare app
        for connections in (64, 1):
            args = args_for(connections, setup.args)
            loads: dict[str, list[Any]] = {s.name: [] for s in servers}
            for server in servers:  # warm
                url = f"http://127.0.0.1:{server.port}{server.infer_path}"
                run_load(url, work / f"{server.name}.body", server.bodies[0], args.warmup, args)
            for _ in range(slices):
                for server in servers:
                    url = f"http://127.0.0.1:{server.port}{server.infer_path}"
                    body = work / f"{server.name}.body"
                    loads[server.name].append(
                        run_load(url, body, server.bodies[0], args.duration, args)
                    )
            mine, theirs = loads[ours.name], loads[bare.name]
            rps = statistics.median(
                (a.requests / a.seconds) / (b.requests / b.seconds)
                for a, b in zip(mine, theirs, strict=True)
            )
            p99 = statistics.median(a.p99_us / b.p99_us for a, b in zip(mine, theirs, strict=True))
            p50 = statistics.median(
                (a.p50_us - b.p50_us) / 1000 for a, b in zip(mine, theirs, strict=True)
            )
            errors = sum(a.errors + a.non_2xx for a in mine) + sum(
                b.errors + b.non_2xx for b in theirs
            )
            ours_p50 = statistics.median(a.p50_us for a in mine) / 1000
            bare_p50 = statistics.median(b.p50_us for b in theirs) / 1000
            print(
                f"c={connections}: p50 torchrig {ours_p50:.2f} ms, bare {bare_p50:.2f} ms; "
                f"errors {errors}; medians over {slices} slice pairs:"
            )
            if connections == 64:
                print(f"  req/s torchrig / bare: {rps:.2f}x (goal >= 1.0): "
                      f"{'met' if rps >= 1.0 else 'MISSED'}")  # fmt: skip
                print(f"  p99 torchrig / bare: {p99:.2f}x (goal <= 2.0): "
                      f"{'met' if p99 <= 2.0 else 'MISSED'}")  # fmt: skip
            else:
                print(f"  p50 torchrig - bare: {p50:+.2f} ms (goal <= +0.2 ms): "
                      f"{'met' if p50 <= 0.2 else 'MISSED'}")  # fmt: skip
        return 0
    finally:
        for process in processes:
            stop(process)


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--slices", type=int, default=0)
    mine, rest = own.parse_known_args(argv if argv is not None else sys.argv[1:])
    args = parse_args([*rest, "--only", "torchrig,asgi"])
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
        if mine.slices > 0:
            code = sliced(servers, setup, base_env, mine.slices)
            print(f"whole run: {time.perf_counter() - started:.0f} s")
            return code
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
