"""Triton's model configuration and statistics extensions, for both transports.

Triton's clients and tools (perf_analyzer, Model Analyzer, dashboards) read a model's
configuration (`GET /v2/models/M/config`, gRPC `ModelConfig`) and its statistics
(`GET /v2/models/M/stats`, gRPC `ModelStatistics`). Both are built here as Triton's JSON
shapes, from the manifest and `config.toml` (configuration) and from what the transports
and the batcher report (statistics); the gRPC service parses the same dictionaries into
its messages, so both transports answer the same.

Statistics are counted per process (with `--workers N`, per worker, as a scrape shows one
worker). `compute_infer` is the batch's executor call, input concatenation and output
split included; `compute_input` is the transport's decoding of a successful request into
tensors (the REST body read included; shared-memory inputs mapped), and `compute_output`
its encoding of the answer (shared-memory outputs written), both timed by the transports.
Per batch size, `compute_input` and `compute_output` count the batches with 0 ns (the
request's own stages are not split by batch).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torchrig.errors import ModelNotFound
from torchrig.runtime import ModelRegistry
from torchrig.runtime.batcher import BatchObserver, BatchRecord
from torchrig.runtime.loader import ServedVersion

PLATFORMS = {
    "torch_export": "pytorch_export",
    "aoti": "pytorch_aoti",
    "torchscript": "pytorch",
    "handler": "python",
    "pipeline": "ensemble",
}


def model_config(served: ServedVersion) -> dict[str, Any]:
    """Triton's model configuration (its JSON field names) of a loaded version."""
    manifest, config = served.interface, served.config  # built-in steps: their signature
    batching = bool(manifest is not None and manifest.batching)
    max_batch = served.batcher.max_batch_size if served.batcher else config.batching.max_batch_size
    if served.pipeline is not None and manifest is not None:  # the smallest member's
        max_batch = manifest.max_batch_size or max_batch
    max_batch_size = max_batch if batching else 0

    def tensors(specs: list[Any]) -> list[dict[str, Any]]:
        # with batching, Triton's dims leave the batch dimension out
        return [
            {
                "name": spec.name,
                "data_type": "TYPE_STRING" if spec.datatype == "BYTES" else f"TYPE_{spec.datatype}",
                "dims": list(spec.shape[1:] if batching else spec.shape),
            }
            for spec in specs
        ]

    if served.replicas is not None:
        devices = [stat.device for stat in served.replicas.stats()]
    else:
        devices = [config.devices[0] if config.devices else config.device]
    policy = config.version_policy
    if policy.policy == "latest":
        version_policy: dict[str, Any] = {"latest": {"num_versions": policy.latest}}
    elif policy.policy == "all":
        version_policy = {"all": {}}
    else:
        version_policy = {"specific": {"versions": list(policy.versions)}}
    result: dict[str, Any] = {
        "name": served.model,
        "platform": PLATFORMS.get(manifest.format if manifest else "", "pytorch"),
        "backend": "torchrig",
        "version_policy": version_policy,
        "max_batch_size": max_batch_size,
        "input": tensors(manifest.inputs if manifest else []),
        "output": tensors(manifest.outputs if manifest else []),
        "instance_group": instance_groups(served.model, devices, config.instances),
    }
    if served.pipeline is not None:  # Triton's ensemble: its steps, no instances of its own
        del result["instance_group"]
        result["ensemble_scheduling"] = {"step": served.pipeline.triton_steps()}
    elif batching:
        result["dynamic_batching"] = {
            "preferred_batch_size": list(config.batching.preferred_batch_sizes),
            "max_queue_delay_microseconds": int(config.batching.max_queue_delay_ms * 1000),
        }
    return result


def instance_groups(model: str, devices: list[str], instances: int) -> list[dict[str, Any]]:
    """Triton's instance groups of a version's replicas (one per device, or repeated): the
    CPU's, then the GPUs' grouped by their instance count (`instances` per replica)."""
    counts: dict[str, int] = {}
    for device in devices:
        key = device if device.startswith("cuda") else "cpu"
        counts[key] = counts.get(key, 0) + instances
    groups: list[dict[str, Any]] = []
    if "cpu" in counts:
        groups.append({"kind": "KIND_CPU", "count": counts.pop("cpu")})
    by_count: dict[int, list[int]] = {}
    for device, count in counts.items():
        by_count.setdefault(count, []).append(int(device.partition(":")[2] or 0))
    for count, gpus in by_count.items():
        groups.append({"kind": "KIND_GPU", "count": count, "gpus": gpus})
    return [{"name": f"{model}_{index}", **group} for index, group in enumerate(groups)]


@dataclass
class _Duration:
    count: int = 0
    ns: int = 0

    def json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class _VersionStats:
    success: _Duration = field(default_factory=_Duration)
    fail: _Duration = field(default_factory=_Duration)
    queue: _Duration = field(default_factory=_Duration)
    compute_input: _Duration = field(default_factory=_Duration)
    compute_infer: _Duration = field(default_factory=_Duration)
    compute_output: _Duration = field(default_factory=_Duration)
    inference_count: int = 0  # rows
    execution_count: int = 0  # batches
    last_inference_ms: int = 0
    batches: dict[int, _Duration] = field(default_factory=lambda: defaultdict(_Duration))


class Statistics:
    """Counters per model version, fed by the transports (`request`) and the batcher's
    observer (`observer`); read in Triton's shape by `report`. `request` runs on the event
    loop (both transports answer there); batches are also counted on the executor's
    threads, under a lock."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self._lock = threading.Lock()
        self._versions: dict[tuple[str, str], _VersionStats] = defaultdict(_VersionStats)

    def request(
        self,
        model: str,
        version: str | None,
        *,
        ok: bool,
        duration_s: float,
        input_ns: int = 0,
        output_ns: int = 0,
    ) -> None:
        """A request to a served version ended (`input_ns`, `output_ns`: its decoding and
        encoding, counted when it succeeded). Requests that named no served version are
        not kept: a client probing random names must not grow the table."""
        if version is None:
            return
        key = (model, version)
        # a version already in the table was served (it stays, unchanged in size, after an
        # unload); only a new one is looked up among the served versions
        stats = self._versions.get(key)
        if stats is None:
            if not any(
                v.model == model and str(v.version) == version for v in self.registry.versions()
            ):
                return
            with self._lock:
                stats = self._versions[key]
        # no lock: these counts change on the event loop only (both transports answer
        # there); a batch takes the lock for the counts the executor's threads change
        if not ok:
            stats.fail.count += 1
            stats.fail.ns += int(duration_s * 1e9)
            return
        stats.success.count += 1
        stats.success.ns += int(duration_s * 1e9)
        stats.compute_input.count += 1
        stats.compute_input.ns += max(input_ns, 0)
        stats.compute_output.count += 1
        stats.compute_output.ns += max(output_ns, 0)

    def _count_batch(self, stats: _VersionStats, record: BatchRecord) -> None:
        now_ms = int(time.time() * 1000)
        compute_ns = int(record.compute_s * 1e9)
        with self._lock:
            stats.execution_count += 1
            stats.last_inference_ms = now_ms
            sized = stats.batches[record.rows]
            sized.count += 1
            sized.ns += compute_ns
            if record.failed:
                return
            stats.inference_count += record.rows
            waits = record.queue_waits_s
            stats.queue.count += len(waits)
            stats.queue.ns += int(sum(waits) * 1e9)
            stats.compute_infer.count += record.requests
            stats.compute_infer.ns += compute_ns * record.requests

    def observer(
        self, metrics: Callable[[str, str], BatchObserver]
    ) -> Callable[[str, str], BatchObserver]:
        """A batch-observer factory that feeds these statistics and `metrics`' observers."""

        def make(model: str, version: str) -> BatchObserver:
            observe = metrics(model, version)
            # the version's row, found once: rows stay in the table for good
            with self._lock:
                stats = self._versions[(model, version)]
            count = self._count_batch

            def both(record: BatchRecord) -> None:
                count(stats, record)
                observe(record)

            return both

        return make

    def versions(self, model: str | None, version: str | None) -> list[tuple[str, str]]:
        """The (model, version) pairs a statistics request names: every loaded version of
        every model, of one model, or one version (ModelNotFound if not served)."""
        loaded = [
            (v.model, str(v.version))
            for v in sorted(self.registry.versions(), key=lambda v: (v.model, v.version))
            if v.state == "ready"
        ]
        if model is None:
            return loaded
        chosen = [p for p in loaded if p[0] == model and version in (None, "", p[1])]
        if not chosen:
            self.registry.resolve(model, version or None)  # names the reason
            raise ModelNotFound(f"model {model} has no version {version} loaded")
        return chosen

    def report(self, versions: list[tuple[str, str]]) -> dict[str, Any]:
        """`{"model_stats": [...]}` for the (model, version) pairs asked for, zeros for a
        version that has served nothing yet."""
        rows = []
        with self._lock:
            for model, version in versions:
                stats = self._versions.get((model, version), _VersionStats())
                rows.append(
                    {
                        "name": model,
                        "version": version,
                        "last_inference": stats.last_inference_ms,
                        "inference_count": stats.inference_count,
                        "execution_count": stats.execution_count,
                        "inference_stats": {
                            "success": stats.success.json(),
                            "fail": stats.fail.json(),
                            "queue": stats.queue.json(),
                            "compute_input": stats.compute_input.json(),
                            "compute_infer": stats.compute_infer.json(),
                            "compute_output": stats.compute_output.json(),
                            "cache_hit": _Duration().json(),
                            "cache_miss": _Duration().json(),
                        },
                        "batch_stats": [
                            {
                                "batch_size": size,
                                "compute_input": {"count": d.count, "ns": 0},
                                "compute_infer": d.json(),
                                "compute_output": {"count": d.count, "ns": 0},
                            }
                            for size, d in sorted(stats.batches.items())
                        ],
                    }
                )
        return {"model_stats": rows}
