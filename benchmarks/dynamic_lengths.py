"""Mixed sequence lengths through the batcher: by length, padded to buckets, one at a time.

A masked TransformerEncoder (token ids and a mask of the real positions -> class scores by
masked mean pooling), packed with `dynamic_dims` 1-128 on both inputs and served in process
by a `ModelRegistry`. N concurrent asyncio callers each send one-row requests, caller i
always the same length from a mix, for D seconds. Two mixes:

- few: lengths 16, 64 and 128 (the callers cycle through them);
- many: 32 distinct lengths, 1 to 125 in steps of 4.

Three ways to serve them, three models of the same weights in one registry:

- alone (baseline): `max_batch_size` 1, every request its own batch: what a server that
  cannot join different lengths has to do;
- by length: `max_batch_size` 32, a batch holds one length (torchrig's default);
- padded: the same with `[padding]` buckets 16, 32, 64, 128: lengths in one bucket share a
  batch, padded to it (only for models that ignore padding, as this one does).

And a reference: by length with every request of length 64, the ceiling batching reaches
when shapes never differ. Each run measures everything back to back; the figures are
medians over the runs, the ratios medians of each run's ratios against alone.

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
from torch import nn

from torchrig.packaging import pack
from torchrig.repository import BatchingConfig, ModelConfig, Repository
from torchrig.repository.config import PaddingConfig
from torchrig.runtime import ModelRegistry

T = TypeVar("T")
MAX_LENGTH = 128
MIXES = {"few": [16, 64, 128], "many": list(range(1, MAX_LENGTH, 4))}
MODES = {"alone": "alone", "by length": "grouped", "padded": "padded"}


class MaskedEncoder(nn.Module):  # type: ignore[misc]
    """[batch, length] ids and mask -> [batch, 4] scores; padded positions change nothing."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(1000, 32)
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 4)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        encoded = self.encoder(self.embed(tokens), src_key_padding_mask=~mask)
        weights = mask.unsqueeze(-1).to(encoded.dtype)
        pooled: torch.Tensor = (encoded * weights).sum(dim=1) / weights.sum(dim=1)
        scores: torch.Tensor = self.head(pooled)
        return scores


def in_thread(function: Callable[[], T]) -> T:
    """Torch work in a thread that ends with it, so the main thread holds no OpenMP team."""
    result: list[T] = []
    worker = threading.Thread(target=lambda: result.append(function()))
    worker.start()
    worker.join()
    return result[0]


def build(repo: Path) -> None:
    model = MaskedEncoder().eval()
    example = {
        "tokens": torch.randint(0, 1000, (3, 10)),
        "mask": torch.ones(3, 10, dtype=torch.bool),
    }
    for name, max_batch, padding in (
        ("alone", 1, None),
        ("grouped", 32, None),
        ("padded", 32, PaddingConfig(buckets=[16, 32, 64, 128])),
    ):
        batching = BatchingConfig(max_batch_size=max_batch)
        pack(
            model,
            example,
            name=name,
            repository=repo,
            dynamic_dims={"tokens": {1: (1, MAX_LENGTH)}, "mask": {1: (1, MAX_LENGTH)}},
            golden_examples=0,
            config=ModelConfig(batching=batching, device="cpu", padding=padding),
        )


async def requests_per_s(
    registry: ModelRegistry, model: str, lengths: list[int], callers: int, seconds: float
) -> tuple[float, float]:
    """(requests/s, mean requests per batch) of `callers` concurrent callers."""
    generator = torch.Generator().manual_seed(0)
    inputs = []
    for i in range(callers):
        length = lengths[i % len(lengths)]
        ids = torch.randint(0, 1000, (1, length), generator=generator)
        inputs.append({"tokens": ids, "mask": torch.ones(1, length, dtype=torch.bool)})
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
    registry = ModelRegistry(Repository(repo), device="cpu")
    await registry.load_all()
    cases = [(mix, mode) for mix in MIXES for mode in MODES] + [("uniform 64", "by length")]

    def lengths_of(mix: str) -> list[int]:
        return MIXES.get(mix, [64])

    for mix, mode in cases:  # unmeasured: first calls, thread pools, allocator
        await requests_per_s(registry, MODES[mode], lengths_of(mix), args.callers, 0.5)
    runs: list[dict[tuple[str, str], tuple[float, float]]] = []
    for _ in range(args.runs):
        runs.append(
            {
                (mix, mode): await requests_per_s(
                    registry, MODES[mode], lengths_of(mix), args.callers, args.seconds
                )
                for mix, mode in cases
            }
        )
    await registry.close()
    print(
        f"torch {torch.__version__}; threads {torch.get_num_threads()}; {args.callers} callers; "
        f"{args.runs} runs of {args.seconds:g} s each, median; mixes: few {MIXES['few']}, "
        f"many {len(MIXES['many'])} lengths 1-{MIXES['many'][-1]}"
    )
    print(f"{'mix':>10} {'mode':>10} {'requests/s':>11} {'requests/batch':>15} {'vs alone':>9}")
    for mix, mode in cases:
        rate = statistics.median(r[(mix, mode)][0] for r in runs)
        per_batch = statistics.median(r[(mix, mode)][1] for r in runs)
        base = (mix, "alone") if mix in MIXES else ("few", "alone")
        ratio = statistics.median(r[(mix, mode)][0] / r[base][0] for r in runs)
        print(f"{mix:>10} {mode:>10} {rate:>11,.0f} {per_batch:>15.1f} {ratio:>8.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--callers", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        in_thread(lambda: build(repo))
        asyncio.run(measure(args, repo))


if __name__ == "__main__":
    main()
