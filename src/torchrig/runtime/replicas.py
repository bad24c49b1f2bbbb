"""A model version's replicas (one loaded program per placed device) behind one `infer`.

The batcher drives a `ReplicaSet` as it drives one executor (`infer(batch)`); its worker
threads (`instances` per replica) each take a batch, and the set hands the batch to the
least busy replica: the fewest batches in flight, then the fewest rows in flight, ties
taken in turn, so that concurrent batches spread over every GPU and each GPU's
`instances` CUDA lanes overlap.

A replica whose CUDA context is poisoned (runtime/faults.py) is taken out of rotation
and reported to `on_fault` with its device: the registry then takes out every replica
on that GPU (the context belongs to the process and the device, so every model there is
affected), and the version keeps serving on the others. Only a version left with no
replica is unhealthy (the registry then marks the process for restart). The batch that
hit the fault fails (it is not retried on another replica: an input that poisons one
GPU would poison the next).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from torchrig.errors import DeviceUnhealthy
from torchrig.runtime.faults import poisons_device

log = logging.getLogger(__name__)

ReplicaState = Literal["serving", "poisoned"]
FaultHandler = Callable[[str, BaseException], None]  # (device, error), from a worker thread
HANDLED = "_torchrig_replica_fault"  # set on an error a ReplicaSet took a replica out for


class ReplicaExecutor(Protocol):
    """What a replica wraps: a loaded executor on one device."""

    device: str

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]: ...

    def unload(self) -> None: ...


@dataclass(frozen=True)
class ReplicaStats:
    """One replica as metrics and the model ready endpoint report it."""

    index: int
    device: str  # as this process sees it: "cpu", "cuda:K"
    gpu: str  # the physical GPU (CUDA_VISIBLE_DEVICES entry, else the index); "" on CPU
    state: ReplicaState
    reason: str | None  # why it left the rotation
    batches: int  # batches run since load (failed ones included)
    rows: int
    inflight_batches: int
    inflight_rows: int


class _Replica:
    def __init__(self, index: int, executor: ReplicaExecutor) -> None:
        self.index = index
        self.executor = executor
        self.device = executor.device
        self.gpu = physical_gpu(self.device)
        self.fault: str | None = None
        self.batches = 0
        self.rows = 0
        self.inflight_batches = 0
        self.inflight_rows = 0


class ReplicaSet:
    """Replicas of one model version; `infer` runs a batch on the least busy one."""

    def __init__(
        self, executors: Sequence[ReplicaExecutor], *, on_fault: FaultHandler | None = None
    ) -> None:
        if not executors:
            raise ValueError("a ReplicaSet needs at least one executor")
        self._replicas = [_Replica(index, ex) for index, ex in enumerate(executors)]
        self.on_fault = on_fault
        self._lock = threading.Lock()
        self._turn = 0  # where the search for the least busy replica starts (ties rotate)

    @property
    def primary(self) -> Any:
        """The first replica's executor: signature, warm-up example, timings."""
        return self._replicas[0].executor

    @property
    def device(self) -> str:
        """The first replica's device: where built-in steps put the tensors they decode
        (a replica on another GPU copies them over on its lane's copy stream)."""
        return self._replicas[0].device

    @property
    def executors(self) -> list[Any]:
        return [replica.executor for replica in self._replicas]

    def __len__(self) -> int:
        return len(self._replicas)

    @property
    def healthy(self) -> int:
        """Replicas still in rotation."""
        with self._lock:
            return sum(1 for r in self._replicas if r.fault is None)

    # ---- what the batcher (and the steps around it) call ---------------------------------

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        rows = _rows(inputs)
        replica = self._acquire(rows)
        try:
            return replica.executor.infer(inputs)
        except Exception as exc:
            if poisons_device(exc):
                self._poisoned(replica, exc)
            raise
        finally:
            with self._lock:
                replica.inflight_batches -= 1
                replica.inflight_rows -= rows
                replica.batches += 1
                replica.rows += rows

    def example(self, rows: int, sizes: Any = None) -> dict[str, Any]:
        return self.primary.example(rows, sizes)  # type: ignore[no-any-return]

    def _acquire(self, rows: int) -> _Replica:
        with self._lock:
            count = len(self._replicas)
            if count == 1 and self._replicas[0].fault is None:  # nothing to choose from
                only = self._replicas[0]
                only.inflight_batches += 1
                only.inflight_rows += rows
                return only
            best: _Replica | None = None
            for step in range(count):
                replica = self._replicas[(self._turn + step) % count]
                if replica.fault is not None:
                    continue
                load = (replica.inflight_batches, replica.inflight_rows)
                if best is None or load < (best.inflight_batches, best.inflight_rows):
                    best = replica
            if best is None:
                reasons = "; ".join(f"{r.device}: {r.fault}" for r in self._replicas)
                raise DeviceUnhealthy(
                    f"every replica of this model is out of rotation ({reasons}); this "
                    "server must be restarted, retry on another"
                )
            self._turn = (best.index + 1) % count
            best.inflight_batches += 1
            best.inflight_rows += rows
            return best

    # ---- faults ----------------------------------------------------------------------------

    def _poisoned(self, replica: _Replica, exc: BaseException) -> None:
        with contextlib.suppress(AttributeError):  # an exception without __dict__
            setattr(exc, HANDLED, True)  # see `handled`
        self.take_out(replica.device, f"{type(exc).__name__}: {exc}", only=replica)
        if self.on_fault is not None:
            try:
                self.on_fault(replica.device, exc)
            except Exception:  # reporting must never take a worker down
                log.exception("the replica fault handler failed")

    def take_out(self, device: str, reason: str, *, only: _Replica | None = None) -> int:
        """Take the replicas on `device` (or just `only`) out of rotation; returns how
        many replicas remain in it."""
        with self._lock:
            for replica in self._replicas:
                chosen = replica is only if only is not None else replica.device == device
                if replica.fault is None and chosen:
                    replica.fault = reason
                    log.error(
                        "replica %d on %s is out of rotation: %s", replica.index, device, reason
                    )
            return sum(1 for r in self._replicas if r.fault is None)

    # ---- reports and lifecycle -------------------------------------------------------------

    def stats(self) -> list[ReplicaStats]:
        with self._lock:
            return [
                ReplicaStats(
                    index=r.index,
                    device=r.device,
                    gpu=r.gpu,
                    state="serving" if r.fault is None else "poisoned",
                    reason=r.fault,
                    batches=r.batches,
                    rows=r.rows,
                    inflight_batches=r.inflight_batches,
                    inflight_rows=r.inflight_rows,
                )
                for r in self._replicas
            ]

    def unload(self) -> None:
        for replica in self._replicas:
            replica.executor.unload()


def handled(exc: BaseException) -> bool:
    """Whether a ReplicaSet already took a replica out for `exc`: a poisoning error raised
    elsewhere (a built-in step decoding on the first replica's GPU) was not."""
    return bool(getattr(exc, HANDLED, False))


def physical_gpu(device: str, environ: Mapping[str, str] | None = None) -> str:
    """The GPU behind `device` as the node names it: the CUDA_VISIBLE_DEVICES entry this
    process's cuda:K maps to (an index or a GPU-/MIG- UUID), else K; "" for the CPU. With
    `serve --workers`, each worker's cuda:0 is a different GPU: this tells them apart."""
    if not device.startswith("cuda"):
        return ""
    index = int(device.partition(":")[2] or 0)
    environ = os.environ if environ is None else environ
    given = environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        entries = [item.strip() for item in given.split(",") if item.strip()]
        if index < len(entries):
            return entries[index]
    return str(index)


def _rows(inputs: Mapping[str, Any]) -> int:
    for first in inputs.values():  # the first input's rows (no iterator object made)
        shape = getattr(first, "shape", None)
        return int(shape[0]) if shape else 1
    return 1
