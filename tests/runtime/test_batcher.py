"""The dynamic batcher with a tiny real model: batches form, rows go home, failures spread."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import torch

from doubles import Doubler, rows, until_async
from torchrig.errors import DeadlineExceeded, InputRejected, QueueFull, RepositoryError
from torchrig.repository.config import BatchingConfig
from torchrig.runtime.batch_requests import ClientGone, client_gone
from torchrig.runtime.batcher import Batcher, BatchRecord


def test_concurrent_callers_form_batches_and_get_their_own_rows() -> None:
    model = Doubler()
    batcher = Batcher(model, BatchingConfig(max_batch_size=16, max_queue_delay_ms=20))

    async def main() -> None:
        async def caller(i: int) -> None:
            count = 1 + i % 3
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
    assert max(stats.batch_sizes) > 1
    assert max(stats.batch_sizes) <= 16
    assert sum(stats.batch_sizes.values()) == stats.batches
    assert all(size <= 16 for size in model.seen_rows)


def test_unbatched_model_runs_requests_alone() -> None:
    model = Doubler()
    batcher = Batcher(model, BatchingConfig(max_batch_size=16), batching=False)

    async def main() -> None:
        await asyncio.gather(*(batcher.infer(rows(i, 1), rows=1) for i in range(20)))

    try:
        asyncio.run(main())
    finally:
        batcher.close()
    assert set(batcher.stats().batch_sizes) == {1}


def test_full_queue_refuses_with_retry_after() -> None:
    model = Doubler()
    model.gate.clear()
    batcher = Batcher(
        model, BatchingConfig(max_batch_size=1, max_queue_size=3, max_queue_delay_ms=0)
    )

    async def main() -> None:
        running = asyncio.ensure_future(batcher.infer(rows(0, 1), rows=1))
        await asyncio.to_thread(model.entered.wait, 10)
        queued = [asyncio.ensure_future(batcher.infer(rows(i, 1), rows=1)) for i in range(3)]
        await until_async(lambda: batcher.stats().queue_depth == 3)
        with pytest.raises(QueueFull) as refused:
            await batcher.infer(rows(9, 1), rows=1)
        assert refused.value.status_code == 503
        assert refused.value.retry_after_s >= 1
        assert "queue full" in refused.value.message
        model.gate.set()
        await asyncio.gather(running, *queued)  # nothing already accepted is lost

    try:
        asyncio.run(main())
    finally:
        model.gate.set()
        batcher.close()
    assert batcher.stats().rejected == 1


def test_expired_and_abandoned_requests_never_reach_the_model() -> None:
    model = Doubler()
    model.gate.clear()
    batcher = Batcher(model, BatchingConfig(max_batch_size=1, max_queue_delay_ms=0))

    async def main() -> None:
        first = asyncio.ensure_future(batcher.infer(rows(0, 1), rows=1))
        await asyncio.to_thread(model.entered.wait, 10)
        late = asyncio.ensure_future(batcher.infer(rows(1, 1), rows=1, timeout_s=1e-9))
        gone = asyncio.ensure_future(batcher.infer(rows(2, 1), rows=1))
        await until_async(lambda: batcher.stats().queue_depth == 2)
        gone.cancel()
        model.gate.set()
        await first
        with pytest.raises(DeadlineExceeded):
            await late
        with pytest.raises(asyncio.CancelledError):
            await gone

    try:
        asyncio.run(main())
    finally:
        model.gate.set()
        batcher.close()
    stats = batcher.stats()
    assert (stats.expired, stats.cancelled) == (1, 1)
    assert model.seen_rows == [1]  # only the first request ran


@pytest.mark.parametrize("dropped_by", ["gather", "sweep"])
def test_requests_whose_clients_left_never_reach_the_model(dropped_by: str) -> None:
    """`client_gone`, set around submit, tells the batcher how to see a request's client
    leave. A request whose client left (or that was cancelled) while the model is busy is
    dropped by the sweep the server runs every 0.25 s (`drop_abandoned`), or else when a
    batch gathers it: its future fails with ClientGone (thread-safely, from the worker),
    it costs no model time, and the others run. A request whose deadline passed goes the
    same way, with DeadlineExceeded."""
    model = Doubler()
    model.gate.clear()
    batcher = Batcher(model, BatchingConfig(max_batch_size=1, max_queue_delay_ms=0))
    left = threading.Event()

    async def main() -> None:
        first = asyncio.ensure_future(batcher.infer(rows(0, 1), rows=1))
        await asyncio.to_thread(model.entered.wait, 10)
        token = client_gone.set(left.is_set)
        try:
            gone = batcher.submit(rows(1, 1), rows=1)
        finally:
            client_gone.reset(token)
        cancelled = batcher.submit(rows(2, 1), rows=1)
        kept = asyncio.ensure_future(batcher.infer(rows(3, 1), rows=1))
        await until_async(lambda: batcher.stats().queue_depth == 3)
        assert batcher.drop_abandoned() == 0  # all three still wanted
        late = batcher.submit(rows(4, 1), rows=1, timeout_s=1e-9)  # its deadline passes
        left.set()  # the client of the second request goes away while it waits
        cancelled.cancel()
        if dropped_by == "sweep":
            assert batcher.drop_abandoned() == 3
            assert batcher.stats().queue_depth == 1
            with pytest.raises(DeadlineExceeded):  # answered before the model is free
                await late
        model.gate.set()
        await first
        with pytest.raises(ClientGone):
            await gone
        with pytest.raises(DeadlineExceeded):
            await late
        assert float((await kept)["y"].reshape(-1)[0]) == 6.0

    try:
        asyncio.run(main())
    finally:
        model.gate.set()
        batcher.close()
    assert (batcher.stats().cancelled, batcher.stats().expired) == (2, 1)
    assert model.seen_rows == [1, 1]  # the first and the fourth request ran


def test_a_failing_request_fails_alone_and_its_batch_mates_are_answered() -> None:
    model = Doubler()
    model.poison = -1.0
    model.gate.clear()
    batcher = Batcher(model, BatchingConfig(max_batch_size=4, max_queue_delay_ms=1000))

    async def main() -> None:
        blocker = asyncio.ensure_future(batcher.infer(rows(100, 4), rows=4))
        await asyncio.to_thread(model.entered.wait, 10)
        mixed = [
            asyncio.ensure_future(batcher.infer({"x": torch.tensor([[v]])}, rows=1))
            for v in (1.0, -1.0, 2.0, 3.0)
        ]
        await until_async(lambda: batcher.stats().queue_depth == 4)
        healthy = asyncio.ensure_future(batcher.infer(rows(5, 2), rows=2))
        model.gate.set()
        assert torch.equal((await blocker)["y"].reshape(-1), torch.arange(100.0, 104.0) * 2)
        results = await asyncio.gather(*mixed, return_exceptions=True)
        assert isinstance(results[1], InputRejected), results
        assert results[1].status_code == 400
        assert "poisoned row" in str(results[1])
        assert "x FP32[1, 1]" in str(results[1])
        for index, value in ((0, 1.0), (2, 2.0), (3, 3.0)):  # the batch-mates
            assert not isinstance(results[index], BaseException), results
            assert float(results[index]["y"]) == 2 * value
        assert torch.equal((await healthy)["y"].reshape(-1), torch.tensor([10.0, 12.0]))

    try:
        asyncio.run(main())
    finally:
        model.gate.set()
        batcher.close()
    stats = batcher.stats()
    assert stats.failed_batches == 1
    assert stats.rejected_inputs == 1
    assert stats.model_faults == 0
    assert stats.isolation_splits == 2  # 4 requests -> 2 + 2 -> 1 + 1


def test_requests_that_arrive_while_a_batch_runs_form_the_next_one() -> None:
    model = Doubler()
    model.gate.clear()
    batcher = Batcher(model, BatchingConfig(max_batch_size=8))  # no queue delay: the default

    async def main() -> None:
        first = asyncio.ensure_future(batcher.infer(rows(0, 1), rows=1))
        await asyncio.to_thread(model.entered.wait, 10)
        later = [asyncio.ensure_future(batcher.infer(rows(i, 1), rows=1)) for i in range(1, 6)]
        await until_async(lambda: batcher.stats().queue_depth == 5)
        model.gate.set()
        await asyncio.gather(first, *later)

    try:
        asyncio.run(main())
    finally:
        model.gate.set()
        batcher.close()
    # the first request did not wait for company; the five that came meanwhile ran together
    assert model.seen_rows == [1, 5]


def test_close_drains_what_was_accepted() -> None:
    model = Doubler()
    model.gate.clear()
    batcher = Batcher(model, BatchingConfig(max_batch_size=2, max_queue_delay_ms=0))

    async def main() -> list[dict[str, Any]]:
        futures = [asyncio.ensure_future(batcher.infer(rows(i, 1), rows=1)) for i in range(5)]
        await asyncio.to_thread(model.entered.wait, 10)
        closing = asyncio.ensure_future(asyncio.to_thread(batcher.close))
        await until_async(lambda: not batcher.accepting)
        with pytest.raises(QueueFull):  # stopped accepting new requests
            await batcher.infer(rows(9, 1), rows=1)
        model.gate.set()
        await closing
        return list(await asyncio.gather(*futures))

    outs = asyncio.run(main())
    assert [float(o["y"][0, 0]) for o in outs] == [0.0, 2.0, 4.0, 6.0, 8.0]


def test_observer_sees_each_batch_and_its_faults_are_swallowed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = Doubler()
    model.poison = -1.0
    model.gate.clear()
    records: list[BatchRecord] = []
    observed = threading.Event()

    def observer(record: BatchRecord) -> None:
        records.append(record)
        observed.set()
        raise RuntimeError("a broken observer must not break serving")

    batcher = Batcher(
        model, BatchingConfig(max_batch_size=4, max_queue_delay_ms=50), observer=observer
    )

    async def main() -> None:
        blocker = asyncio.ensure_future(batcher.infer(rows(0, 1), rows=1))
        await asyncio.to_thread(model.entered.wait, 10)
        waiting = [asyncio.ensure_future(batcher.infer(rows(i, 1), rows=1)) for i in (1, 2)]
        poisoned = asyncio.ensure_future(batcher.infer({"x": torch.tensor([[-1.0]])}, rows=1))
        await until_async(lambda: batcher.stats().queue_depth == 3)
        model.gate.set()
        await blocker
        same_batch = await asyncio.gather(*waiting, poisoned, return_exceptions=True)
        assert not any(isinstance(r, BaseException) for r in same_batch[:2]), same_batch
        assert isinstance(same_batch[2], InputRejected), same_batch
        # the observer raised on the first batch, and the batcher kept serving
        assert torch.equal(
            (await batcher.infer(rows(7, 2), rows=2))["y"].reshape(-1), torch.tensor([14.0, 16.0])
        )

    try:
        asyncio.run(main())
    finally:
        model.gate.set()
        batcher.close()  # joins the workers: every observer call has returned
    assert observed.is_set()
    assert "the batch observer failed" in caplog.text
    assert [(r.rows, r.requests, r.failed) for r in records] == [
        (1, 1, False),
        (3, 3, True),
        (2, 1, False),
    ]
    second = records[1]
    assert len(second.queue_waits_s) == 3
    assert all(0.0 <= wait < 30.0 for wait in second.queue_waits_s)
    assert all(r.compute_s >= 0.0 for r in records)
    assert all(wait > 0.0 for wait in second.queue_waits_s)  # they waited for the first batch


class ThreadCounter:
    """Answers each batch with the torch CPU thread count of the thread that ran it."""

    def infer(self, inputs: Any) -> dict[str, Any]:
        count = torch.get_num_threads()
        return {"threads": torch.full((inputs["x"].shape[0], 1), count)}


def test_each_worker_runs_batches_on_its_own_thread_count() -> None:
    # torch makes a set_num_threads the default of threads started later, so a worker told
    # 1 (a CUDA model's) must not leave the next model's workers with 1: each sets its own.
    before = torch.get_num_threads()
    one = Batcher(ThreadCounter(), BatchingConfig(max_batch_size=4), threads=1)
    two = Batcher(ThreadCounter(), BatchingConfig(max_batch_size=4), instances=2, threads=2)

    async def main() -> list[int]:
        answers = [await one.infer(rows(0, 1), rows=1)]
        answers += await asyncio.gather(*(two.infer(rows(0, 1), rows=1) for _ in range(8)))
        return [int(answer["threads"].item()) for answer in answers]

    try:
        counts = asyncio.run(main())
    finally:
        one.close()
        two.close()
    assert counts == [1] + [2] * 8
    assert torch.get_num_threads() == before  # the calling thread keeps its own


def test_workers_that_cannot_start_fail_the_batcher_with_the_fix() -> None:
    """A process out of threads (here: a stack no thread can get) refuses the batcher with
    the reason and the fix, rather than raising out of the server's startup; once threads
    can start again, a batcher serves."""
    previous = threading.stack_size(1 << 40)  # 1 TiB a thread: no mapping that large
    try:
        with pytest.raises(RepositoryError) as refused:
            Batcher(Doubler(), BatchingConfig(max_batch_size=4), instances=3, name="m/1")
    finally:
        threading.stack_size(previous)
    assert "model m/1: could not start its 3 worker threads" in refused.value.message
    assert "lower instances in its config.toml" in refused.value.message
    batcher = Batcher(Doubler(), BatchingConfig(max_batch_size=4), instances=3, name="m/1")
    try:
        out = asyncio.run(batcher.infer(rows(1, 1), rows=1))
    finally:
        batcher.close()
    assert torch.equal(out["y"].reshape(-1), torch.tensor([2.0]))
