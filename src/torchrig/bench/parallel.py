"""Running load levels in this process or spread over several (multiprocessing, spawn).

One Python process tops out at one core; `processes=P` starts P workers once (spawned,
so nothing of the parent's state leaks in; they import no torch), hands each its share
of every level with a common start time on the monotonic clock, and merges what they
measured: counts are added and latency histograms merged, never percentiles averaged.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections.abc import Callable
from multiprocessing.connection import Connection as Pipe
from multiprocessing.connection import wait
from typing import Any

from torchrig.bench.loadgen import LoadPlan, event_loop_runner, run_share
from torchrig.bench.results import Level, LevelResult, ProcessResult, merge, split_level
from torchrig.errors import TorchrigError

START_DELAY_S = 0.2  # from handing out a level to its common start
READY_TIMEOUT_S = 60.0  # for a spawned process to import and report ready
POLL_S = 0.2


class LoadProcessFailed(TorchrigError):
    """A load-generating process died or did not answer."""

    exit_code = 1


Progress = Callable[[int], None]  # requests completed so far in this level (warm-up included)


def run_levels(
    plan: LoadPlan,
    levels: list[Level],
    *,
    rows_per_request: int,
    processes: int = 1,
    on_level: Callable[[Level], Progress | None] | None = None,
) -> list[LevelResult]:
    """Run each level in turn; `on_level(level)` may return a progress callback for it."""
    if processes <= 1:
        run = event_loop_runner()
        results = []
        for level in levels:
            progress = on_level(level) if on_level else None
            start = time.monotonic() + 0.01
            part: Any = run(run_share(plan, level, start=start, on_progress=progress))
            results.append(_merged(plan, level, [part], rows_per_request))
        return results
    with _Workers(plan, processes) as workers:
        results = []
        for level in levels:
            progress = on_level(level) if on_level else None
            parts = workers.run(level, plan, progress)
            results.append(_merged(plan, level, parts, rows_per_request))
        return results


def _merged(
    plan: LoadPlan, level: Level, parts: list[ProcessResult], rows_per_request: int
) -> LevelResult:
    return merge(level, parts, duration_s=plan.duration_s, rows_per_request=rows_per_request)


class _Workers:
    """P spawned processes, each looping: receive (level, start), run it, send the result."""

    def __init__(self, plan: LoadPlan, processes: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.counters = [context.Value("q", 0, lock=False) for _ in range(processes)]
        self.pipes: list[Pipe] = []
        self.procs: list[Any] = []
        for index in range(processes):
            parent, child = context.Pipe()
            proc = context.Process(
                target=_child,
                args=(child, plan, self.counters[index]),
                name=f"torchrig-bench-{index}",
                daemon=True,
            )
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)
        deadline = time.monotonic() + READY_TIMEOUT_S
        for index, pipe in enumerate(self.pipes):
            self._receive(index, pipe, deadline)

    def __enter__(self) -> _Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        deadline = time.monotonic() + 10
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
        for pipe in self.pipes:
            pipe.close()

    def run(self, level: Level, plan: LoadPlan, progress: Progress | None) -> list[ProcessResult]:
        shares = split_level(level, len(self.procs))
        start = time.monotonic() + START_DELAY_S
        busy: dict[Any, int] = {}
        for counter in self.counters:
            counter.value = 0
        for index, share in enumerate(shares):
            self.pipes[index].send((share, start))
            busy[self.pipes[index]] = index
        deadline = start + plan.warmup_s + plan.duration_s + plan.timeout_s + 30.0
        parts: list[ProcessResult] = []
        while busy:
            for pipe in wait(list(busy), timeout=POLL_S):
                parts.append(self._receive(busy.pop(pipe), pipe, deadline))
            if progress is not None:
                progress(sum(counter.value for counter in self.counters))
            if time.monotonic() > deadline:
                raise LoadProcessFailed(
                    f"{len(busy)} load process(es) did not report within {deadline - start:.0f} s"
                )
        return parts

    def _receive(self, index: int, pipe: Any, deadline: float) -> Any:
        proc = self.procs[index]
        if not pipe.poll(max(0.0, deadline - time.monotonic())):
            raise LoadProcessFailed(f"load process {index} did not answer in time")
        try:
            message = pipe.recv()
        except (EOFError, OSError):
            proc.join(5)
            raise LoadProcessFailed(
                f"load process {index} exited (code {proc.exitcode}) without a result"
            ) from None
        if isinstance(message, str) and message != "ready":
            raise LoadProcessFailed(f"load process {index} failed: {message}")
        return message


def _child(pipe: Pipe, plan: LoadPlan, counter: Any) -> None:
    """A spawned load process: run each (level, start) it receives until told to stop."""
    run = event_loop_runner()

    def progress(done: int) -> None:
        counter.value = done

    try:
        pipe.send("ready")
        while True:
            message = pipe.recv()
            if message is None:
                return
            level, start = message
            try:
                result = run(run_share(plan, level, start=start, on_progress=progress))
            except Exception as exc:  # process boundary: report, do not hang the parent
                pipe.send(f"{type(exc).__name__}: {exc}")
                return
            pipe.send(result)
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        return  # Ctrl+C reaches every process of the group: the parent reports it
