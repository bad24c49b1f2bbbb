"""What a pipeline and a Python handler cost, in process, against doing without them.

Pipeline: `chain` = `encoder` (Linear 256->512, ReLU) then `head` (Linear 512->10), served
as one model. Baseline: the same callers awaiting `encoder` then `head` themselves through
the same registry (what a client calling the two models would do, minus the network).
Handler: a handler running the head's Linear with the same weights (loaded from a file
packed beside it) against the head's torch.export program. Both sides run N concurrent
asyncio callers of R rows each for D seconds, paired back to back on one registry; the
ratio is the median of the pairs' side / baseline (1.0: no cost).

Run: `python benchmarks/pipeline_handler.py [--seconds 2] [--runs 3]`
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from torchrig.packaging import pack
from torchrig.packaging.handler import pack_handler
from torchrig.repository import BatchingConfig, ModelConfig, Repository
from torchrig.runtime import ModelRegistry

T = TypeVar("T")
LEVELS = ((1, 32), (16, 8))  # (rows per request, concurrent callers)
PIPELINE = """\
[[pipeline.step]]
model = "encoder"
input_map = { input = "features" }
output_map = { output = "embedding" }

[[pipeline.step]]
model = "head"
input_map = { input = "embedding" }
output_map = { output = "scores" }
"""
HANDLER = """\
from pathlib import Path

import torch


class Handler:
    def load(self, directory, device):
        state = torch.load(Path(directory) / "head.pt", weights_only=True, map_location=device)
        self.weight, self.bias = state["weight"], state["bias"]

    def infer(self, inputs):
        return {"output": torch.nn.functional.linear(inputs["input"], self.weight, self.bias)}
"""


def in_thread(function: Callable[[], T]) -> T:
    """Torch work in a thread that ends with it (see benchmarks/runtime_ranker.py)."""
    result: list[T] = []
    worker = threading.Thread(target=lambda: result.append(function()))
    worker.start()
    worker.join()
    return result[0]


def build(root: Path) -> None:
    torch.manual_seed(0)
    config = ModelConfig(batching=BatchingConfig(max_batch_size=64))
    encoder = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU())
    head = torch.nn.Linear(512, 10)
    pack(encoder, (torch.randn(2, 256),), name="encoder", repository=root, config=config,
         output_names=["output"])  # fmt: skip
    pack(head, (torch.randn(2, 512),), name="head", repository=root, config=config,
         output_names=["output"])  # fmt: skip
    (root / "chain").mkdir()
    (root / "chain" / "config.toml").write_text(PIPELINE)
    work = root.parent / "handler"
    work.mkdir()
    (work / "handler.py").write_text(HANDLER)
    torch.save({"weight": head.weight.detach(), "bias": head.bias.detach()}, work / "head.pt")
    pack_handler(work / "handler.py", {"input": torch.randn(2, 512)}, name="head_handler",
                 repository=root, config=config, files=[work / "head.pt"])  # fmt: skip


async def rows_per_s(
    call: Callable[[dict[str, Any]], Awaitable[Any]], inputs: list[dict[str, Any]], seconds: float
) -> float:
    stop = time.perf_counter() + seconds
    counted = [0] * len(inputs)

    async def caller(i: int) -> None:
        rows = next(iter(inputs[i].values())).shape[0]
        while time.perf_counter() < stop:
            await call(inputs[i])
            counted[i] += rows

    start = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(len(inputs))))
    return sum(counted) / (time.perf_counter() - start)


async def measure(args: argparse.Namespace, repo: Path) -> None:
    registry = ModelRegistry(Repository(repo), allow_python_handlers=True)
    await registry.load_all()

    async def by_hand(inputs: dict[str, Any]) -> Any:
        _, hidden = await registry.infer("encoder", {"input": inputs["features"]})
        return await registry.infer("head", {"input": hidden["output"]})

    async def pipeline(inputs: dict[str, Any]) -> Any:
        return await registry.infer("chain", inputs)

    async def program(inputs: dict[str, Any]) -> Any:
        return await registry.infer("head", {"input": inputs["embedding"]})

    async def handler(inputs: dict[str, Any]) -> Any:
        return await registry.infer("head_handler", {"input": inputs["embedding"]})

    print(
        f"torch {torch.__version__}; threads {torch.get_num_threads()}; {args.runs} pairs of "
        f"{args.seconds:g} s runs per level (baseline, then the side), median rows/s"
    )
    print(f"{'':>28} {'rows/request':>12} {'callers':>8} {'baseline':>10} {'side':>10} ratio")
    comparisons = (
        ("pipeline vs two calls", by_hand, pipeline, "features", 256),
        ("handler vs program", program, handler, "embedding", 512),
    )
    for label, baseline, side, name, width in comparisons:
        for rows, callers in LEVELS:
            inputs = [{name: torch.randn(rows, width)} for _ in range(callers)]
            pairs = [
                (
                    await rows_per_s(baseline, inputs, args.seconds),
                    await rows_per_s(side, inputs, args.seconds),
                )
                for _ in range(args.runs)
            ]
            base = statistics.median(p[0] for p in pairs)
            other = statistics.median(p[1] for p in pairs)
            ratios = " ".join(f"{p[1] / p[0]:.2f}" for p in pairs)
            print(
                f"{label:>28} {rows:>12} {callers:>8} {base:>10,.0f} {other:>10,.0f} "
                f"{statistics.median(p[1] / p[0] for p in pairs):.2f}x ({ratios})"
            )
    await registry.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        in_thread(lambda: build(repo))
        asyncio.run(measure(args, repo))


if __name__ == "__main__":
    main()
