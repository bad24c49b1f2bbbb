"""The all-reduce probe's launcher: one worker process per rank, joined with a deadline.

NCCL across all local GPUs when there are any, gloo with two ranks on the CPU
otherwise: the same code path, so the CPU run in the tests exercises what runs on a
GPU node. Rendezvous is a file in a private directory, never a fixed TCP port.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import msgspec

from torchrig.facts.model import AllReduceProbe
from torchrig.facts.probes.allreduce_worker import WorkerResult

SIZE_BYTES = 16 * 1024 * 1024
_FLOAT32_BYTES = 4
_LOG_TAIL_CHARS = 2000
FAILURE_GRACE_S = 5.0


def probe_allreduce(
    *,
    backend: str,
    world_size: int,
    workdir: Path,
    timeout_s: float,
    environ: Mapping[str, str] | None = None,
    size_bytes: int = SIZE_BYTES,
) -> AllReduceProbe:
    """All-reduce `size_bytes` of float32 across `world_size` ranks and time it.

    Every worker is waited for until `timeout_s` has passed, then killed. Failures (a
    worker's exception, a crash, the deadline) are recorded in the result's `error`.
    """
    numel = size_bytes // _FLOAT32_BYTES
    env = dict(os.environ if environ is None else environ)
    if backend == "gloo" and sys.platform.startswith("linux"):
        # All ranks are local: bind gloo to loopback rather than to whatever address the
        # hostname resolves to (often nothing, in containers).
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    workdir.mkdir(parents=True, exist_ok=True)
    init_file = workdir / "allreduce-rendezvous"
    init_file.unlink(missing_ok=True)
    deadline = time.monotonic() + timeout_s
    # The group's own timeout fires a little before ours, so a hung peer becomes an error
    # message from the surviving ranks rather than a kill without explanation.
    group_timeout_s = max(1.0, timeout_s * 0.8)
    workers: list[tuple[subprocess.Popen[bytes], Path, Path]] = []
    for rank in range(world_size):
        result_file = workdir / f"allreduce-rank{rank}.json"
        log_file = workdir / f"allreduce-rank{rank}.log"
        result_file.unlink(missing_ok=True)
        command = [
            sys.executable, "-m", "torchrig.facts.probes.allreduce_worker",
            "--rank", str(rank), "--world-size", str(world_size), "--backend", backend,
            "--init-file", str(init_file), "--numel", str(numel),
            "--timeout-s", f"{group_timeout_s:.1f}", "--result", str(result_file),
        ]  # fmt: skip
        with log_file.open("wb") as log:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        workers.append((process, result_file, log_file))

    stuck, reason = _join(workers, deadline, timeout_s)
    results = [_read_result(*worker, killed=rank in stuck) for rank, worker in enumerate(workers)]
    failures = _group_errors(results)
    if stuck:
        names = ", ".join(str(rank) for rank in stuck)
        failures.insert(0, f"{reason} (killed rank {names})")
    if failures:
        return AllReduceProbe(
            backend=backend,
            world_size=world_size,
            ok=False,
            size_bytes=numel * _FLOAT32_BYTES,
            error="; ".join(failures),
        )
    median_ms = statistics.median(results[0].times_ms)
    return AllReduceProbe(
        backend=backend,
        world_size=world_size,
        ok=True,
        size_bytes=numel * _FLOAT32_BYTES,
        median_ms=median_ms,
        bus_bandwidth_gbps=bus_bandwidth_gbps(numel * _FLOAT32_BYTES, world_size, median_ms),
    )


def bus_bandwidth_gbps(size_bytes: int, world_size: int, time_ms: float) -> float | None:
    """nccl-tests' all-reduce bus bandwidth in GB/s: size·2(n−1)/n per second.

    None for a single rank, where no byte crosses a bus.
    """
    if world_size < 2 or time_ms <= 0:
        return None
    return size_bytes * 2 * (world_size - 1) / world_size / (time_ms / 1000.0) / 1e9


def _join(
    workers: list[tuple[subprocess.Popen[bytes], Path, Path]], deadline: float, timeout_s: float
) -> tuple[list[int], str]:
    """Wait for every worker; kill the rest at the deadline, or soon after one failed.

    A rank that failed leaves its peers blocked in the collective until the group's
    timeout; they get `FAILURE_GRACE_S` to report their own error, then are killed.
    Returns the killed ranks and why they were killed.
    """
    pending = list(range(len(workers)))
    limit, reason = deadline, f"did not finish within {timeout_s:.3g} s"
    failed = False
    while pending:
        for rank in list(pending):
            returncode = workers[rank][0].poll()
            if returncode is None:
                continue
            pending.remove(rank)
            if not failed and (returncode != 0 or not _succeeded(workers[rank][1])):
                failed = True
                limit = min(deadline, time.monotonic() + FAILURE_GRACE_S)
                reason = f"stopped after rank {rank} failed"
        remaining = limit - time.monotonic()
        if pending and remaining <= 0:
            for rank in pending:
                workers[rank][0].kill()
                workers[rank][0].wait()
            return pending, reason
        if pending:
            # Returns when the first pending rank ends, or after a short while.
            with contextlib.suppress(subprocess.TimeoutExpired):
                workers[pending[0]][0].wait(timeout=min(remaining, 0.1))
    return [], reason


def _succeeded(result_file: Path) -> bool:
    try:
        return msgspec.json.decode(result_file.read_bytes(), type=WorkerResult).ok
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return False


def _read_result(
    process: subprocess.Popen[bytes], result_file: Path, log_file: Path, *, killed: bool
) -> WorkerResult:
    """The worker's own result, or what its exit and log say when it wrote none."""
    try:
        return msgspec.json.decode(result_file.read_bytes(), type=WorkerResult)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        pass
    tail = _tail(log_file)
    if killed:  # already reported as killed; its last output may say where it hung
        error = f"last output: {tail}" if tail else ""
    else:
        error = f"{_exit_status(process.returncode)} without a result"
        error += f": {tail}" if tail else ""
    return WorkerResult(rank=-1, ok=False, error=error)


def _group_errors(results: list[WorkerResult]) -> list[str]:
    """One "rank 0, 1: message" line per distinct message, in rank order."""
    ranks_by_error: dict[str, list[int]] = {}
    for rank, result in enumerate(results):
        if not result.ok and result.error:
            ranks_by_error.setdefault(result.error, []).append(rank)
    return [
        f"rank {', '.join(str(rank) for rank in ranks)}: {error}"
        for error, ranks in ranks_by_error.items()
    ]


def _exit_status(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _tail(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return text.strip()[-_LOG_TAIL_CHARS:]
