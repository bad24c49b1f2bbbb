"""Run model work in threads that end with it.

torch's CPU kernels run on an OpenMP thread team owned by the thread that calls them, and
the team lives as long as that thread. When more teams are alive than the machine has
cores, OpenMP's idle threads stop spinning and every parallel region pays for waking
them: a batch on a worker thread ran 2.5x slower on a 2-core box while a thread pool's
idle thread still held the team it made for a warm-up (`benchmarks/worker_thread.py`).
So loading and warming up run in a thread of their own that exits afterwards, and only
the batcher's workers keep teams.

Each worker also sets its own intra-op thread count (`use_intra_op_threads`): one for a
CUDA model, whose host side only joins and copies batches, so that no idle team spins on
cores the event loop needs (a 2-thread team's spinning thread took 70 % of a core in a
server moving 1.2 MB frame requests, `benchmarks/serve_frames.py`); the process's count
for a CPU model. torch keeps one process-wide default that a thread takes the first time
it runs torch code, and `torch.set_num_threads` in any thread changes that default too,
so every worker sets its count explicitly rather than inheriting whatever was set last.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_process_threads: list[int] = []  # read once
_process_threads_lock = threading.Lock()


def process_intra_op_threads() -> int:
    """torch's intra-op thread count for the process (OMP_NUM_THREADS, else torch's own
    default), read once, before any worker sets its own."""
    with _process_threads_lock:
        if not _process_threads:
            import torch

            _process_threads.append(int(torch.get_num_threads()))
        return _process_threads[0]


def use_intra_op_threads(count: int) -> None:
    """Make this thread's torch CPU kernels use `count` threads (call it first thing in a
    worker thread)."""
    import torch

    process_intra_op_threads()  # read the process's count before changing it
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)


async def in_own_thread(function: Callable[[], T], *, name: str = "torchrig-load") -> T:
    """Await `function()` run in a new thread that ends when it returns."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():  # the awaiting task was cancelled meanwhile
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def target() -> None:
        try:
            result = function()
        except BaseException as exc:  # handed to the awaiting task, which re-raises it
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=target, name=name, daemon=True).start()
    return await future
