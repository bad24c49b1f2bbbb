"""The model's own ceiling: rows/s per batch size when nothing but the executor runs.

The version is loaded exactly as the server loads it (`torchrig.runtime.executor.Executor`
with the model's config.toml, on its device), then each batch size is timed over repeated
`infer()` calls: each run calls it for RUN_S seconds, and the median of RUNS runs is
reported. On CUDA the device is synchronised before a run's clock stops.
Inputs are the executor's own `example(rows)`.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import msgspec

from torchrig.errors import TorchrigError, UsageError

RUNS = 5
RUN_S = 0.1
WARM_CALLS = 2


class BatchCeiling(msgspec.Struct, frozen=True, kw_only=True):
    batch_size: int
    rows_per_s: float
    batch_ms: float  # median time of one infer() call


class Ceiling(msgspec.Struct, frozen=True, kw_only=True):
    """The in-process ceiling of one model version on one device."""

    model: str
    version: int
    device: str
    max_batch_size: int  # the server's batch limit (config.toml), 1 without batching
    batches: list[BatchCeiling]

    def at(self, batch_size: int) -> BatchCeiling | None:
        return next((b for b in self.batches if b.batch_size == batch_size), None)


class ServerShare(msgspec.Struct, frozen=True, kw_only=True):
    """A server's rows/s as a share of the in-process ceiling at its max batch size."""

    batch_size: int
    server_rows_per_s: float
    in_process_rows_per_s: float
    ratio: float


def server_share(server_rows_per_s: float, ceiling: Ceiling) -> ServerShare | None:
    """The share at the server's max_batch_size (None when that size was not measured)."""
    at = ceiling.at(ceiling.max_batch_size)
    if at is None or at.rows_per_s <= 0:
        return None
    return ServerShare(
        batch_size=at.batch_size,
        server_rows_per_s=server_rows_per_s,
        in_process_rows_per_s=at.rows_per_s,
        ratio=server_rows_per_s / at.rows_per_s,
    )


def parse_target(value: str) -> tuple[Path, str, int | None]:
    """`REPO/MODEL[/VERSION]` -> (repository, model, version or None)."""
    path = Path(value)
    version: int | None = None
    if path.name.isdigit():
        version, path = int(path.name), path.parent
    if not path.name or not path.parent.is_dir():
        raise UsageError(
            f"--in-process {value!r}: give REPO/MODEL (or REPO/MODEL/VERSION), "
            "e.g. --in-process models/ranker"
        )
    return path.parent, path.name, version


def measure_ceiling(
    target: str,
    *,
    batch_sizes: list[int] | None = None,
    device: str | None = None,
    include_max_batch: bool = False,
) -> Ceiling:
    """Load REPO/MODEL[/VERSION] and time it per batch size (default: the sizes the server
    warms up). `include_max_batch` adds the server's max_batch_size to the sizes."""
    from torchrig.repository import Repository
    from torchrig.repository.discovery import selected_versions
    from torchrig.runtime.executor import Executor

    repository_path, name, wanted = parse_target(target)
    repository = Repository(repository_path)
    info = repository.model(name)
    if info.config is None:
        raise UsageError(f"{target}: {info.config_error}")
    if wanted is None:
        chosen = selected_versions(info)
    else:
        chosen = [v for v in info.versions if v.version == wanted and v.complete]
    if not chosen or chosen[0].manifest is None:
        problems = "; ".join(
            f"version {v.version}: {v.problem}" for v in info.versions if v.problem
        )
        raise UsageError(
            f"{target}: no complete version to load" + (f" ({problems})" if problems else "")
        )
    version = chosen[0]
    manifest = version.manifest
    if manifest is None:  # pragma: no cover - checked above
        raise UsageError(f"{target}: version {version.version} has no manifest")
    executor = Executor(repository.local_version_dir(version), manifest, info.config, device=device)
    executor.load()
    try:
        max_batch = info.config.batching.max_batch_size if manifest.batching else 1
        sizes = sorted(set(batch_sizes or executor.warmup_sizes()))
        if include_max_batch and max_batch not in sizes:
            sizes.append(max_batch)
        if not manifest.batching and sizes != [1]:
            raise UsageError(
                f"{target} has no batch dimension: only batch size 1 can be measured "
                "(drop --batch-sizes)"
            )
        batches = [_time_batch(executor, rows, target) for rows in sizes]
    finally:
        executor.unload()
    return Ceiling(
        model=name,
        version=version.version,
        device=executor.device,
        max_batch_size=max_batch,
        batches=batches,
    )


def _time_batch(executor: Any, rows: int, target: str) -> BatchCeiling:
    inputs = executor.example(rows)
    sync = _synchronizer(executor.device)
    try:
        for _ in range(WARM_CALLS):
            executor.infer(inputs)
        sync()
    except TorchrigError:
        raise
    except Exception as exc:
        raise UsageError(
            f"{target} failed at batch size {rows}: {type(exc).__name__}: {exc}; "
            "choose --batch-sizes within what the model accepts"
        ) from None
    per_call: list[float] = []
    clock = time.perf_counter
    for _ in range(RUNS):
        calls, started = 0, clock()
        while calls == 0 or clock() - started < RUN_S:
            executor.infer(inputs)
            calls += 1
        sync()  # work still queued on the device belongs to this run
        per_call.append((clock() - started) / calls)
    median = statistics.median(per_call)
    return BatchCeiling(
        batch_size=rows, rows_per_s=round(rows / median, 2), batch_ms=round(median * 1e3, 4)
    )


def _synchronizer(device: str) -> Any:
    if not device.startswith("cuda"):
        return lambda: None
    import torch

    return lambda: torch.cuda.synchronize(device)
