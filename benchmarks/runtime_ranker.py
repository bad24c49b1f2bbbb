"""The batching runtime against the bare model: rows/s of the demo ranker, in process.

Baseline: the packed program called directly at the batch size the runtime forms (same
process, same session). Runtime: `ModelRegistry.infer` driven by N concurrent asyncio
callers, each sending requests of R rows, for D seconds. Each runtime run is paired with
a direct run just before it, so that both see the same machine (a shared VM drifts by
tens of percent over a minute); the ratio is the median of the pairs' runtime / direct at
the runtime's max_batch_size (target >= 0.9 at saturation).

Run: `python benchmarks/runtime_ranker.py [--seconds 2] [--runs 3] [--device cpu]`
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from torchrig.demo import build_demo_repository
from torchrig.packaging import load_program, read_manifest
from torchrig.repository import Repository
from torchrig.runtime import ModelRegistry

T = TypeVar("T")


def ranker_inputs(rows: int, seed: int = 0) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "dense": torch.randn(rows, 13, generator=generator),
        "sparse": torch.randint(0, 1000, (rows, 26), generator=generator),
    }


def in_thread(function: Callable[[], T]) -> T:
    """Run torch work in a thread that ends with it: its OpenMP team goes with it, so the
    main thread never holds one (see torchrig.runtime.threads for why that matters)."""
    result: list[T] = []
    worker = threading.Thread(target=lambda: result.append(function()))
    worker.start()
    worker.join()
    return result[0]


def direct_rows_per_s(program: Any, rows: int, seconds: float) -> float:
    inputs = ranker_inputs(rows)
    with torch.inference_mode():
        for _ in range(20):
            program(inputs)
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            program(inputs)
            done += rows
    return done / (time.perf_counter() - start)


async def runtime_rows_per_s(
    registry: ModelRegistry, rows: int, callers: int, seconds: float
) -> tuple[float, float]:
    inputs = [ranker_inputs(rows, seed) for seed in range(callers)]
    stop = time.perf_counter() + seconds
    counted = [0] * callers

    async def caller(i: int) -> None:
        while time.perf_counter() < stop:
            await registry.infer("ranker", inputs[i])
            counted[i] += rows

    served = registry.resolve("ranker")
    assert served.batcher is not None
    before = served.batcher.stats()
    start = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(callers)))
    elapsed = time.perf_counter() - start
    after = served.batcher.stats()
    batches = after.batches - before.batches
    mean_batch = (after.rows - before.rows) / batches if batches else 0.0
    return sum(counted) / elapsed, mean_batch


async def one_pair(
    args: argparse.Namespace, repo: Path, rows: int, callers: int
) -> tuple[float, float, float, int]:
    """One direct run and one runtime run back to back, on a registry of their own:
    (direct rows/s, runtime rows/s, mean batch, max_batch_size). Closing the registry
    ends its workers, whose idle OpenMP teams would otherwise slow the next direct run
    (libgomp stops spinning when more threads than cores exist, see runtime/threads.py)."""
    registry = ModelRegistry(Repository(repo), device=args.device)
    await registry.load("ranker")
    served = registry.resolve("ranker")
    assert served.batcher is not None
    max_batch = served.batcher.max_batch_size
    manifest = read_manifest(repo / "ranker" / "1")
    program = load_program(repo / "ranker" / "1", manifest, device=args.device)
    direct = in_thread(lambda: direct_rows_per_s(program, max_batch, args.seconds))
    rate, batch = await runtime_rows_per_s(registry, rows, callers, args.seconds)
    await registry.close()
    return direct, rate, batch, max_batch


async def measure(args: argparse.Namespace, repo: Path) -> None:
    levels = ((1, 256), (8, 64), (32, 16), (64, 8))
    pairs = {
        level: [await one_pair(args, repo, *level) for _ in range(args.runs)] for level in levels
    }
    max_batch = pairs[levels[0]][0][3]
    direct_all = [pair[0] for runs in pairs.values() for pair in runs]
    print(
        f"device {args.device}; torch {torch.__version__}; threads {torch.get_num_threads()}; "
        f"max_batch_size {max_batch}; {args.runs} pairs of {args.seconds:g} s runs per level "
        "(direct, then runtime, each pair on a fresh registry), median"
    )
    print(
        f"direct program call, batch {max_batch}: {statistics.median(direct_all):,.0f} rows/s "
        f"(min {min(direct_all):,.0f}, max {max(direct_all):,.0f} over the pairs)"
    )
    print(
        f"{'rows/request':>12} {'callers':>8} {'runtime rows/s':>15} {'mean batch':>11} "
        f"{'vs direct':>10}  per pair"
    )
    for (rows, callers), runs in pairs.items():
        rate = statistics.median(r[1] for r in runs)
        batch = statistics.median(r[2] for r in runs)
        ratios = [r[1] / r[0] for r in runs]
        print(
            f"{rows:>12} {callers:>8} {rate:>15,.0f} {batch:>11.1f} "
            f"{statistics.median(ratios):>9.2f}x  {' '.join(f'{x:.2f}' for x in ratios)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads for both sides (0: torch's default). On a 2-core box, 1 "
        "leaves the event loop its own core, as a server process would have.",
    )
    parser.add_argument(
        "--instances",
        type=int,
        default=0,
        help="worker threads for the ranker (default: its config.toml)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        repo = in_thread(lambda: build_demo_repository(Path(tmp) / "repo"))
        if args.instances:
            config = repo / "ranker" / "config.toml"
            text = re.sub(r"(?m)^instances = .*$", "", config.read_text())
            config.write_text(f"instances = {args.instances}\n" + text)
        asyncio.run(measure(args, repo))


if __name__ == "__main__":
    main()
