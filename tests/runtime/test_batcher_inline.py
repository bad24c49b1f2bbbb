"""The batcher's inline mode: a fast CPU model's batches run on the event loop that queued
them, with the same batching, isolation, deadlines, drain and statistics as a worker."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

import pytest
import torch

from doubles import Doubler, rows
from torchrig.errors import DeadlineExceeded, InputRejected, QueueFull
from torchrig.repository.config import BatchingConfig
from torchrig.runtime.batcher import Batcher


class ThreadRecorder(Doubler):
    """A Doubler that notes the thread each batch ran on."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        self.threads.append(threading.get_ident())
        return super().infer(inputs)


def _workers() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("torchrig-inline-")]


def test_an_idle_model_runs_a_request_at_once_and_the_rest_of_its_iteration_as_one_batch() -> None:
    """The first request finds the model idle: its batch runs inside submit (its future is
    done before anything awaits it, no loop round trip). The requests queued after it in
    the same loop iteration form one batch, on the loop thread. Requests came together,
    so the next one queues for its loop iteration's batch; once one came alone, an idle
    model runs the next request at once again."""
    model = ThreadRecorder()
    batcher = Batcher(model, BatchingConfig(max_batch_size=16), name="inline-a", inline=True)
    assert _workers() == []  # no worker thread at all

    async def main() -> int:
        futures = [batcher.submit(rows(i, 1), rows=1) for i in range(10)]
        assert [f.done() for f in futures] == [True] + [False] * 9
        outs = await asyncio.gather(*futures)
        for i, out in enumerate(outs):
            assert float(out["y"][0, 0]) == 2.0 * i
        together = batcher.submit(rows(20, 2), rows=2)  # the last batch had 9 requests
        assert not together.done()
        assert float((await together)["y"][1, 0]) == 42.0
        alone = batcher.submit(rows(30, 1), rows=1)  # the last batch had one
        assert alone.done()
        assert float((await alone)["y"][0, 0]) == 60.0
        return threading.get_ident()

    try:
        loop_thread = asyncio.run(main())
    finally:
        batcher.close()
    assert model.seen_rows == [1, 9, 2, 1]  # no request waited for company
    assert set(model.threads) == {loop_thread}


def test_a_queue_delay_opts_out_of_running_at_once() -> None:
    """With max_queue_delay_ms, the first request waits for company (up to the delay), as
    the user asked: the requests of one loop iteration form one batch."""
    model = Doubler()
    config = BatchingConfig(max_batch_size=4, max_queue_delay_ms=50)
    batcher = Batcher(model, config, inline=True)

    async def main() -> None:
        futures = [batcher.submit(rows(i, 1), rows=1) for i in range(4)]
        assert not any(f.done() for f in futures)
        await asyncio.gather(*futures)

    try:
        asyncio.run(main())
    finally:
        batcher.close()
    assert model.seen_rows == [4]


def test_concurrent_callers_batch_and_count_as_with_a_worker() -> None:
    model = Doubler()
    batcher = Batcher(model, BatchingConfig(max_batch_size=16), inline=True)

    async def main() -> None:
        async def caller(i: int) -> None:
            count = 1 + i % 3
            await asyncio.sleep(0)  # callers arrive over several loop iterations
            out = await batcher.infer(rows(i * 10, count), rows=count)
            expected = torch.arange(i * 10, i * 10 + count, dtype=torch.float32) * 2
            assert torch.equal(out["y"].reshape(-1), expected)

        await asyncio.gather(*(caller(i) for i in range(200)))

    try:
        asyncio.run(main())
    finally:
        batcher.close()
    stats = batcher.stats()
    assert stats.requests == 200
    assert stats.rows == sum(1 + i % 3 for i in range(200))
    assert stats.batches < 100, stats  # batching happened
    assert max(stats.batch_sizes) <= 16
    assert sum(stats.batch_sizes.values()) == stats.batches == len(model.seen_rows)
    assert stats.queue_depth == 0


def test_a_bad_row_fails_alone_and_its_batch_mates_are_answered() -> None:
    model = Doubler()
    model.poison = -1.0
    batcher = Batcher(model, BatchingConfig(max_batch_size=8), inline=True)

    async def main() -> list[Any]:
        futures = [batcher.submit({"x": torch.tensor([[v]])}, rows=1) for v in (1, -1, 2, 3)]
        return list(await asyncio.gather(*futures, return_exceptions=True))

    try:
        results = asyncio.run(main())
    finally:
        batcher.close()
    assert isinstance(results[1], InputRejected), results
    assert results[1].status_code == 400
    assert "poisoned row" in str(results[1])
    for index, value in ((0, 1.0), (2, 2.0), (3, 3.0)):
        assert float(results[index]["y"]) == 2 * value
    stats = batcher.stats()
    assert (stats.failed_batches, stats.rejected_inputs, stats.model_faults) == (1, 1, 0)
    assert stats.isolation_splits == 2  # 4 requests -> 2 + 2 -> 1 + 1


def test_expired_and_cancelled_requests_never_reach_the_model() -> None:
    model = Doubler()
    batcher = Batcher(model, BatchingConfig(max_batch_size=8), inline=True)

    async def main() -> None:
        first = batcher.submit(rows(0, 1), rows=1)  # the model is idle: runs at once
        assert first.done()
        # the rest of this loop iteration queues for the next batch
        late = batcher.submit(rows(1, 1), rows=1, timeout_s=1e-9)
        gone = batcher.submit(rows(2, 1), rows=1)
        kept = batcher.submit(rows(3, 1), rows=1)
        gone.cancel()  # the caller went away before the batch started
        assert float((await kept)["y"][0, 0]) == 6.0
        with pytest.raises(DeadlineExceeded):
            await late
        assert gone.cancelled()

    try:
        asyncio.run(main())
    finally:
        batcher.close()
    stats = batcher.stats()
    assert (stats.expired, stats.cancelled, stats.requests) == (1, 1, 2)
    assert model.seen_rows == [1, 1]


def test_a_queue_delay_holds_the_batch_until_it_is_full() -> None:
    model = Doubler()
    batcher = Batcher(
        model, BatchingConfig(max_batch_size=3, max_queue_delay_ms=60_000), inline=True
    )

    async def main() -> None:
        first = batcher.submit(rows(0, 1), rows=1)
        for _ in range(5):  # several loop iterations: the delay holds the first request
            await asyncio.sleep(0)
        assert not first.done()
        assert model.seen_rows == []
        rest = batcher.submit(rows(1, 2), rows=2)  # the batch is full: it runs at once
        await asyncio.wait_for(asyncio.gather(first, rest), timeout=30)

    try:
        asyncio.run(main())
    finally:
        batcher.close()
    assert model.seen_rows == [3]


def test_close_from_another_thread_drains_on_the_loop() -> None:
    model = Doubler()
    batcher = Batcher(model, BatchingConfig(max_batch_size=2), inline=True)

    async def main() -> list[dict[str, Any]]:
        futures = [batcher.submit(rows(i, 1), rows=1) for i in range(5)]
        closing = asyncio.ensure_future(asyncio.to_thread(batcher.close))
        await asyncio.wait_for(closing, timeout=30)
        with pytest.raises(QueueFull):  # stopped accepting new requests
            batcher.submit(rows(9, 1), rows=1)
        return list(await asyncio.gather(*futures))

    outs = asyncio.run(main())
    assert [float(o["y"][0, 0]) for o in outs] == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert model.seen_rows == [1, 2, 2]  # the first ran at once, the rest drained on the loop


def test_close_on_the_loop_thread_runs_what_is_queued_there() -> None:
    model = Doubler()
    batcher = Batcher(model, BatchingConfig(max_batch_size=2), inline=True)

    async def main() -> list[dict[str, Any]]:
        futures = [batcher.submit(rows(i, 1), rows=1) for i in range(3)]
        batcher.close()  # synchronously, before the loop ran the scheduled batch
        assert all(f.done() for f in futures)
        return list(await asyncio.gather(*futures))

    outs = asyncio.run(main())
    assert [float(o["y"][0, 0]) for o in outs] == [0.0, 2.0, 4.0]
    assert batcher.stats().requests == 3


def test_requests_left_by_a_stopped_loop_are_drained_at_close() -> None:
    model = Doubler()
    batcher = Batcher(
        model, BatchingConfig(max_batch_size=4, max_queue_delay_ms=60_000), inline=True
    )
    futures: list[asyncio.Future[Any]] = []

    async def main() -> None:
        futures.append(batcher.submit(rows(0, 1), rows=1))  # its loop ends before it runs

    asyncio.run(main())
    assert not futures[0].done()  # waiting for company (the queue delay) when the loop ended
    batcher.close(timeout_s=30)  # no loop runs: the batch runs here, and nobody hangs
    assert model.seen_rows == [1]
    assert batcher.stats().requests == 1


def test_a_batch_far_slower_than_measured_moves_the_model_to_a_worker_thread(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = ThreadRecorder()
    # any batch takes longer than this threshold: the first one moves the model
    config = BatchingConfig(max_batch_size=4, inline_max_ms=1e-9)
    batcher = Batcher(model, config, name="inline-b", inline=True)

    async def main() -> int:
        first = await batcher.infer(rows(1, 1), rows=1)
        assert float(first["y"][0, 0]) == 2.0
        assert not batcher.inline
        second = await batcher.infer(rows(2, 1), rows=1)  # answered by the worker
        assert float(second["y"][0, 0]) == 4.0
        return threading.get_ident()

    try:
        loop_thread = asyncio.run(main())
        assert _workers() == ["torchrig-inline-b-0"]
    finally:
        batcher.close()
    assert model.threads[0] == loop_thread
    assert model.threads[1] != loop_thread
    assert "its batches run on a worker thread from now on" in caplog.text
    assert batcher.stats().requests == 2


def test_a_request_past_its_deadline_at_an_idle_model_leaves_it_idle() -> None:
    """A request that would run at once but whose deadline already passed is answered
    (DeadlineExceeded) without running, and the next request still runs at once."""
    model = Doubler()
    batcher = Batcher(model, BatchingConfig(max_batch_size=8), inline=True)

    async def main() -> None:
        late = batcher.submit(rows(1, 1), rows=1, timeout_s=0.0)
        assert late.done()
        with pytest.raises(DeadlineExceeded):
            await late
        at_once = batcher.submit(rows(2, 1), rows=1)
        assert at_once.done()  # ran inside submit: the model was still idle
        assert float((await at_once)["y"][0, 0]) == 4.0

    try:
        asyncio.run(main())
    finally:
        batcher.close()
    assert model.seen_rows == [1]
    assert batcher.stats().expired == 1
