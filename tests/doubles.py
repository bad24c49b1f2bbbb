"""Test doubles for the batcher: a tiny real model and a deadline-bound poll."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch


class Doubler:
    """A tiny real model: y = 2x, which can be held at a gate and poisoned by a value."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.seen_rows: list[int] = []
        self.poison = float("nan")

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        self.entered.set()
        self.gate.wait(30)
        x = inputs["x"]
        self.seen_rows.append(x.shape[0])
        if bool((x == self.poison).any()):
            raise ValueError("poisoned row")
        return {"y": x * 2}


async def until_async(condition: Any, timeout_s: float = 10.0) -> None:
    """Poll a condition with a deadline (no sleep standing in for it)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.001)


def until(
    condition: Callable[[], Any],
    what: str | Callable[[], str] = "the condition",
    timeout_s: float = 30.0,
    interval_s: float = 0.005,
) -> Any:
    """Poll a condition from a test thread with a deadline (no sleep standing in for it);
    returns its first truthy value. `what` names it in the failure, or builds that text
    when the deadline passes (to show a log or the last answer)."""
    deadline = time.monotonic() + timeout_s
    while not (found := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not in time: {what() if callable(what) else what}")
        time.sleep(interval_s)
    return found


def rows(start: float, count: int) -> dict[str, Any]:
    return {"x": torch.arange(start, start + count, dtype=torch.float32).reshape(count, 1)}
