"""Every GPU measurement of the runtime and the server in one run (a few minutes, one GPU).

ResNet-50 (random weights) in bf16, taking uint8 frames that it normalises on the GPU:
1. pack: export it into a fresh repository with the serving config below.
2. in-process (`Executor`, the runtime's own path from host tensors to host tensors):
   eager batch 1 and 128, CUDA graphs batch 1 and 128, torch.compile + graphs at 1, 8
   and 128 from as many threads as instances; and the bare replay of the compiled batch-128
   graph on device-resident data: the model's ceiling on this card.
3. runtime: `ModelRegistry.infer` from N concurrent asyncio callers of 8 images each
   against the executor at the batch size the runtime forms.
4. server: `torchrig serve` in a subprocess, loaded by `torchrig bench` with the binary
   protocol, 8 images per request at concurrency 256 from several processes; then batch-1
   latency at concurrency 1; optionally two server processes sharing the GPU.
Median of several runs for each in-process figure; a table last.

Run: `python benchmarks/gpu_throughput.py [--sections pack,inprocess,runtime,server]
[--seconds 3] [--runs 3] [--repo DIR]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from torchrig.packaging import pack, read_manifest
from torchrig.repository.config import BatchingConfig, ModelConfig
from torchrig.runtime.executor import Executor

SERVER_BATCH = 128
IMAGES_PER_REQUEST = 8
SIZES = [1, 8, 32, 64, SERVER_BATCH]
SERVING = ModelConfig(
    batching=BatchingConfig(
        max_batch_size=SERVER_BATCH,
        max_queue_delay_ms=2.0,
        preferred_batch_sizes=SIZES,
        max_queue_size=4096,
    ),
    device="cuda:0",
    channels_last=True,
    instances=2,
    cuda_graphs=True,
    compile="default",
)
# batch-1 latency: a second copy that never waits for a batch to fill
LATENCY = ModelConfig(
    batching=BatchingConfig(max_batch_size=8, max_queue_delay_ms=0.0, preferred_batch_sizes=[1, 8]),
    device="cuda:0",
    channels_last=True,
    instances=1,
    cuda_graphs=True,
    compile="default",
)
ROWS: list[tuple[str, str, float, str]] = []  # (section, what, value, unit)
CEILING: dict[str, float] = {}  # "in-process": compiled img/s at SERVER_BATCH


def note(section: str, what: str, value: float, unit: str) -> None:
    ROWS.append((section, what, value, unit))
    print(f"[{section}] {what}: {value:,.1f} {unit}", flush=True)


def frames(rows: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (rows, 3, 224, 224), dtype=torch.uint8, generator=generator)


def rate(step: Callable[[], int], seconds: float, runs: int, threads: int = 1) -> float:
    """Median over `runs` of the units/s that `threads` threads calling `step` reach."""
    figures = []
    for _ in range(runs):
        stop = time.perf_counter() + seconds
        counts = [0] * threads

        def loop(i: int, stop: float = stop, counts: list[int] = counts) -> None:
            while time.perf_counter() < stop:
                counts[i] += step()

        start = time.perf_counter()
        workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        torch.cuda.synchronize()
        figures.append(sum(counts) / (time.perf_counter() - start))
    return statistics.median(figures)


# ---- 1. pack ------------------------------------------------------------------------------


def section_pack(repo: Path) -> None:
    from torchrig.demo import torchvision_models

    module, example = torchvision_models(torch.bfloat16)["resnet50"]
    for name, config in (("resnet50", SERVING), ("resnet50_latency", LATENCY)):
        started = time.perf_counter()
        pack(
            module,
            example,
            name=name,
            repository=repo,
            version=1,
            output_names=["logits"],
            max_batch_size=1024,
            config=config,
            description="ResNet-50, random weights, bf16, uint8 frames normalised on the GPU",
        )
        note("pack", f"{name}: export + goldens (CPU)", time.perf_counter() - started, "s")


# ---- 2. in-process ------------------------------------------------------------------------


def load(repo: Path, **changes: Any) -> Executor:
    version = repo / "resnet50" / "1"
    fields = {f: getattr(SERVING, f) for f in SERVING.__struct_fields__}
    fields.update(changes)
    executor = Executor(version, read_manifest(version), ModelConfig(**fields))
    started = time.perf_counter()
    executor.load()
    what = ", ".join(f"{k}={v}" for k, v in changes.items()) or "serving config"
    note("load", what, time.perf_counter() - started, "s")
    for warning in executor.warnings:
        print(f"  warning: {warning}", flush=True)
    return executor


def section_inprocess(repo: Path, seconds: float, runs: int, *, quick: bool = False) -> float:
    """Returns the compiled in-process ceiling at the server's batch size (img/s)."""
    batch = {n: {"image": frames(n)} for n in (1, 8, SERVER_BATCH)}

    def step(executor: Executor, rows: int) -> Callable[[], int]:
        return lambda: executor.infer(batch[rows])["logits"].shape[0]

    if quick:  # only the compiled ceiling
        return _compiled(repo, batch, step, seconds, runs)
    uncompiled = {"eager bf16": False, "CUDA graph": True}
    for label, graphs in uncompiled.items():
        executor = load(repo, cuda_graphs=graphs, compile="off", instances=1)
        for rows in (1, SERVER_BATCH):
            figure = rate(step(executor, rows), seconds, runs)
            note("in-process", f"{label} batch {rows}", figure, "img/s")
        executor.unload()
    return _compiled(repo, batch, step, seconds, runs)


def _compiled(
    repo: Path,
    batch: dict[int, dict[str, torch.Tensor]],
    step: Callable[[Executor, int], Callable[[], int]],
    seconds: float,
    runs: int,
) -> float:
    compiled = load(repo)
    threads = SERVING.instances
    ceiling = 0.0
    for rows in (1, 8, SERVER_BATCH):
        figure = rate(step(compiled, rows), seconds, runs, threads=threads)
        note("in-process", f"compiled + graph batch {rows}, {threads} threads", figure, "img/s")
        ceiling = figure
    CEILING["in-process"] = ceiling
    # the model alone: replay the batch-128 graph on the data already on the device
    lane = compiled._lanes.get() if compiled._lanes is not None else None
    if lane is not None and SERVER_BATCH in lane.graphs:
        graph = lane.graphs[SERVER_BATCH].graph

        def replay() -> int:
            graph.replay()
            return SERVER_BATCH

        with torch.cuda.stream(lane.stream):
            bare = rate(replay, seconds, runs)
        note("in-process", f"bare compiled graph replay batch {SERVER_BATCH}", bare, "img/s")
        compiled._lanes.put(lane)  # type: ignore[union-attr]
    # batch-1 latency through the executor (host -> device -> host)
    one = batch[1]
    latencies = []
    for _ in range(200):
        started = time.perf_counter()
        compiled.infer(one)
        latencies.append((time.perf_counter() - started) * 1000)
    note("in-process", "batch-1 latency p50, compiled + graph", statistics.median(latencies), "ms")
    compiled.unload()
    return ceiling


# ---- 3. runtime (registry + batcher) --------------------------------------------------------


async def runtime_rate(repo: Path, callers: int, seconds: float, runs: int) -> None:
    from torchrig.repository import Repository
    from torchrig.runtime import ModelRegistry

    registry = ModelRegistry(Repository(repo))
    started = time.perf_counter()
    await registry.load("resnet50")
    note("load", "registry (serving config)", time.perf_counter() - started, "s")
    served = registry.resolve("resnet50")
    if served.state != "ready" or served.batcher is None:
        raise RuntimeError(f"resnet50 did not load: {served.reason}")
    inputs = [{"image": frames(IMAGES_PER_REQUEST, seed)} for seed in range(callers)]
    figures, batches = [], []
    for _ in range(runs):
        stop = time.perf_counter() + seconds
        done = [0]

        async def caller(i: int, stop: float = stop, done: list[int] = done) -> None:
            while time.perf_counter() < stop:
                await registry.infer("resnet50", inputs[i])
                done[0] += IMAGES_PER_REQUEST

        before = served.batcher.stats()
        start = time.perf_counter()
        await asyncio.gather(*(caller(i) for i in range(callers)))
        figures.append(done[0] / (time.perf_counter() - start))
        after = served.batcher.stats()
        batches.append((after.rows - before.rows) / max(1, after.batches - before.batches))
    note(
        "runtime",
        f"{callers} async callers x {IMAGES_PER_REQUEST} img",
        statistics.median(figures),
        "img/s",
    )
    note("runtime", "mean batch formed", statistics.median(batches), "rows")
    await registry.close()


# ---- 4. server ----------------------------------------------------------------------------


def start_server(repo: Path, port: int, workers: int, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "torchrig", "serve", str(repo), "--port", str(port)]
    command += ["--host", "127.0.0.1", "--log-format", "text"]
    if workers > 1:
        command += ["--workers", str(workers)]
    return subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def wait_ready(url: str, server: subprocess.Popen[bytes], timeout_s: float) -> float:
    import httpx

    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server was not ready after {timeout_s:.0f} s")


def bench(url: str, *args: str, model: str = "resnet50") -> dict[str, Any]:
    command = [sys.executable, "-m", "torchrig", "bench", url, "--model", model, "--json"]
    done = subprocess.run(
        [*command, *args], check=False, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def runs_of(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The concurrency levels of a `torchrig bench --json` document."""
    return list(report["levels"])


def server_seconds(url: str, model: str) -> tuple[float, float]:
    """(sum, count) of the server's own request-duration histogram for `model`."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    total = count = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        if family.name != "torchrig_request_duration_seconds":
            continue
        for sample in family.samples:
            if sample.labels.get("model") != model:
                continue
            if sample.name.endswith("_sum"):
                total += sample.value
            elif sample.name.endswith("_count"):
                count += sample.value
    return total, count


def section_server(
    repo: Path, *, seconds: float, processes: int, servers: int, workers: int, out: Path
) -> None:
    ports = [18500 + i for i in range(servers)]  # a benchmark machine, not a test: fixed ports
    procs = [
        start_server(repo, port, workers, out / f"server-{port}-w{workers}.log") for port in ports
    ]
    try:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for url, proc in zip(urls, procs, strict=True):
            note("server", f"startup to ready ({url})", wait_ready(url, proc, 400), "s")
        load = ["--binary", "--batch", str(IMAGES_PER_REQUEST), "--duration", str(seconds)]
        concurrency = 256 // servers
        with_procs = ["--processes", str(max(1, processes // servers))]
        results: list[dict[str, Any]] = []
        threads = [
            threading.Thread(
                target=lambda u=url: results.append(
                    bench(u, *load, "--concurrency", str(concurrency), *with_procs)
                )
            )
            for url in urls
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        total = sum(r["rows_per_s"] for report in results for r in runs_of(report))
        p99 = max(r["latency_ms"]["p99"] for report in results for r in runs_of(report))
        errors = sum(r["errors"] for report in results for r in runs_of(report))
        label = f"{servers} server(s) x {workers} worker(s), c=256, {IMAGES_PER_REQUEST} img/req"
        note("server", label, total, "img/s")
        if "in-process" in CEILING:
            share = 100 * total / CEILING["in-process"]
            note("server", f"{label}: share of the in-process ceiling", share, "%")
        note("server", f"{label}: p99", p99, "ms")
        note("server", f"{label}: errors", errors, "requests")
        if servers == 1:
            before = server_seconds(urls[0], "resnet50_latency")
            single = bench(
                urls[0],
                *("--binary", "--batch", "1", "--concurrency", "1", "--duration", "5"),
                model="resnet50_latency",
            )
            after = server_seconds(urls[0], "resnet50_latency")
            run = runs_of(single)[0]
            label = "batch 1, c=1, no queue delay"
            note("server", f"{label}: p50 latency, client side", run["latency_ms"]["p50"], "ms")
            note("server", f"{label}: p99 latency, client side", run["latency_ms"]["p99"], "ms")
            served = after[1] - before[1]
            if served > 0:
                mean_ms = 1000 * (after[0] - before[0]) / served
                note("server", f"{label}: mean latency, server side", mean_ms, "ms")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sections", default="pack,inprocess,runtime,server")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--processes", type=int, default=4, help="load-generator processes")
    parser.add_argument("--servers", default="1", help="separate servers to try, e.g. 1,2")
    parser.add_argument("--workers", default="1", help="`serve --workers` to try, e.g. 1,4")
    parser.add_argument("--repo", type=Path, default=None)
    parser.add_argument(
        "--quick", action="store_true", help="in-process: only the compiled ceiling"
    )
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("this benchmark needs a CUDA GPU")
    print(f"{torch.cuda.get_device_name()}; torch {torch.__version__}", flush=True)
    sections = set(args.sections.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        repo = args.repo or Path(tmp) / "repo"
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("pack", lambda: section_pack(repo)),
            (
                "inprocess",
                lambda: section_inprocess(repo, args.seconds, args.runs, quick=args.quick),
            ),
            (
                "runtime",
                lambda: asyncio.run(runtime_rate(repo, args.callers, args.seconds, args.runs)),
            ),
        ]
        for count in (int(c) for c in args.servers.split(",")):
            for workers in (int(w) for w in args.workers.split(",")):
                steps.append(
                    (
                        "server",
                        lambda n=count, w=workers: section_server(
                            repo,
                            seconds=10.0,
                            processes=args.processes,
                            servers=n,
                            workers=w,
                            out=args.out,
                        ),
                    )
                )
        for name, step in steps:
            if name not in sections:
                continue
            try:
                step()
            except Exception as exc:  # report and go on: one run must give every figure it can
                print(f"[{name}] FAILED: {type(exc).__name__}: {exc}", flush=True)
    print()
    print(f"{'section':<11} {'measurement':<58} {'value':>12} unit")
    for section, what, value, unit in ROWS:
        print(f"{section:<11} {what:<58} {value:>12,.1f} {unit}")


if __name__ == "__main__":
    main()
