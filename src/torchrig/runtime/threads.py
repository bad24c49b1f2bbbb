"""Run model work in threads that end with it.

torch's CPU kernels run on an OpenMP thread team owned by the thread that calls them, and
the team lives as long as that thread. When more teams are alive than the machine has
cores, OpenMP's idle threads stop spinning and every parallel region pays for waking
them: a batch on a worker thread ran 2.5x slower on a 2-core box while a thread pool's
idle thread still held the team it made for a warm-up (`benchmarks/worker_thread.py`).
So loading and warming up run in a thread of their own that exits afterwards, and only
the batcher's workers keep teams.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


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
