"""Requests of different shapes past the batch dimension never share a batch."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import torch

from doubles import Doubler, until_async
from torchrig.repository.config import BatchingConfig
from torchrig.runtime.batcher import Batcher


class ShapeRecorder(Doubler):
    """The doubler, remembering the full shape of every batch it ran."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[list[int]] = []

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        out = super().infer(inputs)
        self.shapes.append(list(inputs["x"].shape))
        return out


def sequence(value: float, length: int, count: int = 1) -> dict[str, Any]:
    return {"x": torch.full((count, length), value)}


def test_a_batch_holds_one_shape_led_by_the_oldest_request() -> None:
    model = ShapeRecorder()
    model.gate.clear()
    batcher = Batcher(model, BatchingConfig(max_batch_size=64))
    lengths = [3, 5, 3, 7, 5, 3, 5, 7, 3]

    async def main() -> None:
        held = asyncio.ensure_future(batcher.infer(sequence(-1.0, 2), rows=1))
        await asyncio.to_thread(model.entered.wait, 10)
        queued = [
            asyncio.ensure_future(batcher.infer(sequence(float(i), n), rows=1))
            for i, n in enumerate(lengths)
        ]
        await until_async(lambda: batcher.stats().queue_depth == len(lengths))
        model.gate.set()
        await held
        for i, (n, future) in enumerate(zip(lengths, queued, strict=True)):
            out = await future
            assert torch.equal(out["y"], torch.full((1, n), 2.0 * i))

    try:
        asyncio.run(main())
    finally:
        batcher.close()
    # after the held request: one batch per length, in the order each length first queued
    assert model.shapes == [[1, 2], [4, 3], [3, 5], [2, 7]], model.shapes
    assert batcher.stats().isolation_splits == 0  # nothing was concatenated wrongly


def test_no_shape_starves_behind_a_busy_one() -> None:
    """A steady stream of one length cannot hold back a request of another: it leads the
    next batch as soon as it is the oldest waiting."""
    model = ShapeRecorder()
    model.gate.clear()
    batcher = Batcher(model, BatchingConfig(max_batch_size=2))

    async def main() -> None:
        held = asyncio.ensure_future(batcher.infer(sequence(0.0, 4), rows=1))
        await asyncio.to_thread(model.entered.wait, 10)
        busy = [asyncio.ensure_future(batcher.infer(sequence(1.0, 4), rows=1)) for _ in range(3)]
        rare = asyncio.ensure_future(batcher.infer(sequence(2.0, 9), rows=1))
        more = [asyncio.ensure_future(batcher.infer(sequence(1.0, 4), rows=1)) for _ in range(4)]
        await until_async(lambda: batcher.stats().queue_depth == 8)
        model.gate.set()
        await asyncio.gather(held, *busy, rare, *more)

    try:
        asyncio.run(main())
    finally:
        batcher.close()
    lengths = [shape[1] for shape in model.shapes]
    # held, then two full batches of 4s; then the 9, oldest by then, before the later 4s
    assert lengths[:4] == [4, 4, 4, 9], model.shapes
    assert sum(shape[0] for shape in model.shapes) == 9
