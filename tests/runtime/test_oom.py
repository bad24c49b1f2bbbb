"""Out of memory and poisoned devices in the batcher, with tiny real models that fail
the way CUDA does: batches split in halves until they fit, only a row that never fits
fails, and an error that poisons the context is reported once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

import pytest
import torch

from doubles import rows
from torchrig.errors import DeviceUnhealthy, InferenceFailed, InsufficientMemory
from torchrig.repository.config import BatchingConfig
from torchrig.runtime.batcher import Batcher
from torchrig.runtime.faults import is_out_of_memory, poisons_device


class Limited:
    """y = 2x on at most `max_rows` rows per call; more raise torch.OutOfMemoryError, and a
    row whose value is `huge` never fits (nor does anything, with `max_rows=0`)."""

    def __init__(self, max_rows: int, huge: float = 1e9) -> None:
        self.max_rows = max_rows
        self.huge = huge
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        x = inputs["x"]
        with self.lock:
            self.calls.append(x.shape[0])
        if x.shape[0] > self.max_rows or bool((x == self.huge).any()):
            raise torch.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {x.shape[0]} rows (injected)"
            )
        return {"y": x * 2}


def test_an_oversize_batch_is_split_until_it_fits_and_every_request_is_answered() -> None:
    model = Limited(max_rows=3)
    batcher = Batcher(model, BatchingConfig(max_batch_size=16, max_queue_delay_ms=50))
    sizes = [1, 2, 3, 1, 2, 5, 1, 1]  # 16 rows; the 5-row request is split by rows

    async def main() -> list[dict[str, Any]]:
        return list(
            await asyncio.gather(
                *(batcher.infer(rows(i * 100, n), rows=n) for i, n in enumerate(sizes))
            )
        )

    try:
        outs = asyncio.run(main())
    finally:
        batcher.close()
    for i, (n, out) in enumerate(zip(sizes, outs, strict=True)):
        expected = torch.arange(i * 100, i * 100 + n, dtype=torch.float32) * 2
        assert torch.equal(out["y"].reshape(-1), expected), i
    stats = batcher.stats()
    assert stats.oom_splits >= 3
    assert stats.oom_failures == 0
    assert stats.failed_batches == 0
    assert max(model.calls) > 3  # the batch that did not fit was tried
    ran = [n for n in model.calls if n <= 3]
    assert sum(ran) == sum(sizes)  # each row ran exactly once in a call that fitted


def test_only_a_row_that_never_fits_fails_with_507_and_its_batch_mates_are_answered() -> None:
    model = Limited(max_rows=8, huge=-1.0)
    batcher = Batcher(model, BatchingConfig(max_batch_size=8, max_queue_delay_ms=50))

    async def main() -> list[Any]:
        big = {"x": torch.tensor([[1.0], [-1.0], [3.0]])}  # its middle row never fits
        return list(
            await asyncio.gather(
                batcher.infer(rows(10, 2), rows=2),
                batcher.infer(big, rows=3),
                batcher.infer(rows(20, 2), rows=2),
                return_exceptions=True,
            )
        )

    try:
        first, big, last = asyncio.run(main())
    finally:
        batcher.close()
    assert torch.equal(first["y"].reshape(-1), torch.tensor([20.0, 22.0]))
    assert torch.equal(last["y"].reshape(-1), torch.tensor([40.0, 42.0]))
    assert isinstance(big, InsufficientMemory), big
    assert big.status_code == 507
    assert "a request of 3 rows" in big.message
    assert "max_batch_size" in big.message
    assert batcher.stats().oom_failures == 1


def test_an_unbatched_model_out_of_memory_fails_only_that_request() -> None:
    model = Limited(max_rows=0)
    batcher = Batcher(model, BatchingConfig(max_batch_size=8), batching=False)

    async def main() -> None:
        with pytest.raises(InsufficientMemory, match="a request of 1 row"):
            await batcher.infer(rows(1, 1), rows=1)

    try:
        asyncio.run(main())
    finally:
        batcher.close()
    assert model.calls == [1]  # no split of a request without a batch dimension


class Poisoned:
    """Raises what CUDA raises after an illegal memory access, on a marker value."""

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        if bool((inputs["x"] == -1).any()):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if bool((inputs["x"] == -2).any()):
            raise ValueError("an ordinary model bug")
        return {"y": inputs["x"]}


def test_a_poisoning_error_is_reported_and_an_ordinary_one_is_not() -> None:
    faults: list[BaseException] = []
    batcher = Batcher(
        Poisoned(),
        BatchingConfig(max_batch_size=1, max_queue_delay_ms=0),
        on_device_fault=faults.append,
    )

    async def main() -> None:
        with pytest.raises(InferenceFailed, match="ordinary model bug"):
            await batcher.infer({"x": torch.tensor([[-2.0]])}, rows=1)
        assert faults == []
        with pytest.raises(DeviceUnhealthy, match="illegal memory access") as err:
            await batcher.infer({"x": torch.tensor([[-1.0]])}, rows=1)
        assert err.value.status_code == 503

    try:
        asyncio.run(main())
    finally:
        batcher.close()
    assert len(faults) == 1
    assert batcher.stats().device_faults == 1


@pytest.mark.parametrize(
    ("error", "oom", "poison"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True, False),
        (RuntimeError("CUDA error: out of memory"), True, False),
        (RuntimeError("CUDA error: device-side assert triggered"), False, True),
        (RuntimeError("CUDA error: an illegal memory access was encountered"), False, True),
        (RuntimeError("CUDA error: unspecified launch failure"), False, True),
        (RuntimeError("CUDA error: misaligned address"), False, True),
        (RuntimeError("shape mismatch: [2, 3] vs [3, 2]"), False, False),
        (ValueError("out of memory, said the model's own code"), False, False),
    ],
)
def test_classification(error: BaseException, oom: bool, poison: bool) -> None:
    assert is_out_of_memory(error) is oom
    assert poisons_device(error) is poison


def test_a_wrapped_error_is_classified_by_its_cause() -> None:
    from torchrig.errors import ArtifactError

    def wrapped(cause: BaseException) -> BaseException:
        try:
            raise cause
        except BaseException as exc:
            error = ArtifactError("the executor failed")
            error.__cause__ = exc
            return error

    assert is_out_of_memory(wrapped(torch.OutOfMemoryError("CUDA out of memory")))
    assert poisons_device(wrapped(RuntimeError("CUDA error: device-side assert triggered")))
    assert not poisons_device(wrapped(ValueError("bad shape")))
