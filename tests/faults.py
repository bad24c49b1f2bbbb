"""A tiny real model with injectable faults, packed into real repositories (test helper).

`Faulty(version, budget_rows, tag)` computes y = x * version through a custom operator
`torchrig_tests::faulty`, which survives torch.export and so runs inside the served
program. The operator:
- raises `torch.OutOfMemoryError` when a call holds more than `budget_rows` row units (a
  row whose column 1 is >= HUGE costs HUGE units: it never fits, even alone);
- raises the RuntimeError CUDA gives for an illegal memory access when a value is POISON;
- records every call's tag and first-column values in `CALLS` (which rows reached the
  model), then waits while `gate(tag)` is closed (requests stay in flight meanwhile).
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from torchrig.envlock import take_lock
from torchrig.envlock.model import EnvLock
from torchrig.packaging import pack
from torchrig.packaging.packer import PackedVersion
from torchrig.repository import BatchingConfig, ModelConfig

HUGE = 1000.0
POISON = -999.0
CALLS: list[tuple[int, list[float]]] = []  # (tag, x[:, 0]) of every call of the operator
_GATES: dict[int, threading.Event] = {}
_LOCK = threading.Lock()
_ONCE: dict[str, object] = {}  # "ops": registered; "lock": the EnvLock of every pack


def gate(tag: int) -> threading.Event:
    """The gate of the models packed with `tag` (open unless a test clears it)."""
    with _LOCK:
        if tag not in _GATES:
            _GATES[tag] = threading.Event()
            _GATES[tag].set()
        return _GATES[tag]


def seen(tag: int) -> list[float]:
    """Every first-column value the operator ran for models packed with `tag`."""
    with _LOCK:
        return [value for t, values in CALLS if t == tag for value in values]


def register_ops() -> None:
    """Define the operator once per process (before packing or loading a Faulty model)."""
    with _LOCK:
        if "ops" in _ONCE:
            return
        _ONCE["ops"] = True

    @torch.library.custom_op("torchrig_tests::faulty", mutates_args=())
    def faulty(x: torch.Tensor, budget_rows: int, tag: int) -> torch.Tensor:
        with _LOCK:
            CALLS.append((tag, [float(v) for v in x[:, 0]]))
        gate(tag).wait(60)
        units = x.shape[0] + int((x[:, 1] >= HUGE).sum()) * int(HUGE)
        if units > budget_rows:
            raise torch.OutOfMemoryError(
                f"CUDA out of memory (injected): {units} row units > {budget_rows}"
            )
        if bool((x == POISON).any()):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return x.clone()

    @faulty.register_fake
    def _(x: torch.Tensor, budget_rows: int, tag: int) -> torch.Tensor:
        return torch.empty_like(x)


class Faulty(torch.nn.Module):
    """y = x * version, through the fault-injecting operator."""

    def __init__(self, version: int, budget_rows: int = 1 << 20, tag: int = 0) -> None:
        super().__init__()
        self.budget_rows = budget_rows
        self.tag = tag
        self.register_buffer("scale", torch.tensor(float(version)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.torchrig_tests.faulty(x, self.budget_rows, self.tag) * self.scale


def environment() -> EnvLock:
    """One environment lock for every pack of the session (taking one costs a second)."""
    lock = _ONCE.get("lock")
    if not isinstance(lock, EnvLock):
        lock = _ONCE["lock"] = take_lock()
    return lock


def pack_faulty(
    root: Path,
    name: str,
    version: int,
    *,
    budget_rows: int = 1 << 20,
    tag: int = 0,
    config: ModelConfig | None = None,
) -> PackedVersion:
    """Pack `Faulty(version, budget_rows, tag)` as `root/name/version` (2 FP32 columns)."""
    register_ops()
    config = config or ModelConfig(
        batching=BatchingConfig(max_batch_size=16, max_queue_delay_ms=5, preferred_batch_sizes=[1])
    )
    return pack(
        Faulty(version, budget_rows, tag),
        (torch.zeros(2, 2),),
        name=name,
        repository=root,
        version=version,
        input_names=["x"],
        output_names=["y"],
        golden_examples=1,
        config=config,
        environment=environment(),
    )


def body(values: list[float], second: float = 0.0) -> dict[str, object]:
    """A V2 JSON request for the Faulty model: one row per value, column 1 = `second`."""
    data = [v for value in values for v in (value, second)]
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [len(values), 2], "data": data}]}
