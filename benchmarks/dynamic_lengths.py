"""Mixed sequence lengths through the batcher: batched by length against one at a time.

A TransformerEncoder (`torchrig.demo:encoder`, [batch, length, 32]) packed with
`--dynamic src:1:1-512` and served in process by a `ModelRegistry`. N concurrent asyncio
callers each send one-row requests whose lengths cycle through a mix (16, 64, 128 by
default), for D seconds.

- grouped: `max_batch_size` 32; the batcher puts requests of one length in a batch and
  lets the other lengths lead the next batches (what torchrig does);
- alone (baseline): `max_batch_size` 1, every request its own batch: what a server that
  cannot join different lengths, nor tell them apart, has to do;
- uniform (reference): grouped, with every request of the mix's middle length, the ceiling
  batching reaches when shapes never differ.

Each run measures the three back to back on one registry; the figures are medians over the
runs, and the ratio is the median of each run's grouped / alone.

Run: `python benchmarks/dynamic_lengths.py [--seconds 2] [--runs 3] [--callers 32]`
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from torchrig.demo import encoder
from torchrig.packaging import pack
from torchrig.repository import BatchingConfig, ModelConfig, Repository
from torchrig.runtime import ModelRegistry

T = TypeVar("T")


def in_thread(function: Callable[[], T]) -> T:
    """Torch work in a thread that ends with it, so the main thread holds no OpenMP team."""
    result: list[T] = []
    worker = threading.Thread(target=lambda: result.append(function()))
    worker.start()
    worker.join()
    return result[0]


def build(repo: Path) -> None:
    module, example = encoder()
    for name, max_batch in (("grouped", 32), ("alone", 1)):
        pack(
            module,
            example,
            name=name,
            repository=repo,
            dynamic_dims={"src": {1: (1, 512)}},
            golden_examples=0,
            config=ModelConfig(batching=BatchingConfig(max_batch_size=max_batch), device="cpu"),
        )


async def requests_per_s(
    registry: ModelRegistry, model: str, lengths: list[int], callers: int, seconds: float
) -> tuple[float, float]:
    """(requests/s, mean requests per batch) of `callers` concurrent callers."""
    generator = torch.Generator().manual_seed(0)
    inputs = [
        {"src": torch.randn(1, lengths[i % len(lengths)], 32, generator=generator)}
        for i in range(callers)
    ]
    stop = time.perf_counter() + seconds
    counted = [0] * callers

    async def caller(i: int) -> None:
        while time.perf_counter() < stop:
            await registry.infer(model, inputs[i])
            counted[i] += 1

    batcher = registry.resolve(model).batcher
    assert batcher is not None
    before = batcher.stats()
    start = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(callers)))
    elapsed = time.perf_counter() - start
    after = batcher.stats()
    batches = after.batches - before.batches
    return sum(counted) / elapsed, (after.requests - before.requests) / max(1, batches)


async def measure(args: argparse.Namespace, repo: Path) -> None:
    lengths = [int(n) for n in args.lengths.split(",")]
    middle = sorted(lengths)[len(lengths) // 2]
    registry = ModelRegistry(Repository(repo), device="cpu")
    await registry.load_all()
    modes = [("alone", "alone", lengths), ("grouped", "grouped", lengths)]
    modes.append(("uniform", "grouped", [middle]))
    for _, model, mix in modes:  # unmeasured: first calls, thread pools, allocator
        await requests_per_s(registry, model, mix, args.callers, 0.5)
    runs: list[dict[str, tuple[float, float]]] = []
    for _ in range(args.runs):
        run: dict[str, tuple[float, float]] = {}
        for label, model, mix in modes:
            run[label] = await requests_per_s(registry, model, mix, args.callers, args.seconds)
        runs.append(run)
    await registry.close()
    print(
        f"torch {torch.__version__}; threads {torch.get_num_threads()}; {args.callers} callers; "
        f"lengths {lengths}; {args.runs} runs of {args.seconds:g} s each, median"
    )
    print(f"{'mode':>8} {'requests/s':>11} {'requests/batch':>15}")
    for label in ("alone", "grouped", "uniform"):
        rate = statistics.median(r[label][0] for r in runs)
        per_batch = statistics.median(r[label][1] for r in runs)
        print(f"{label:>8} {rate:>11,.0f} {per_batch:>15.1f}")
    ratios = [r["grouped"][0] / r["alone"][0] for r in runs]
    print(
        f"grouped / alone: {statistics.median(ratios):.2f}x "
        f"(per run: {' '.join(f'{x:.2f}' for x in ratios)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--lengths", default="16,64,128", help="comma-separated lengths")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        in_thread(lambda: build(repo))
        asyncio.run(measure(args, repo))


if __name__ == "__main__":
    main()
