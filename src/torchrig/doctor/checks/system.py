"""Checks of the host or container: /dev/shm, memory and CPU limits, risky variables."""

from __future__ import annotations

import math

from torchrig.doctor.context import (
    gpu_memory_total,
    human_bytes,
    result,
    skip,
    visible_gpus,
)
from torchrig.doctor.model import CheckContext, CheckResult

SHM_FIX = (
    "give the container a larger /dev/shm: `docker run --shm-size=16g` (or `--ipc=host`); "
    "on Kubernetes mount an emptyDir with `medium: Memory` at /dev/shm"
)

# keys PYTORCH_CUDA_ALLOC_CONF accepts (torch 2.9-2.14 CUDA caching allocator)
ALLOC_CONF_KEYS = frozenset(
    {
        "max_split_size_mb",
        "roundup_power2_divisions",
        "garbage_collection_threshold",
        "expandable_segments",
        "pinned_use_cuda_host_register",
        "pinned_num_register_threads",
        "pinned_use_background_threads",
        "release_lock_on_cudamalloc",
        "backend",
        "per_process_memory_fraction",
        "graph_capture_record_stream_reuse",
        "pinned_reserve_segment_size_mb",
        "max_non_split_rounding_mb",
        "pinned_max_round_threshold_mb",
        "pinned_max_cached_size_mb",
    }
)


def check_shm(ctx: CheckContext) -> list[CheckResult]:
    snap = ctx.snapshot
    shm = snap.shm
    if shm is None or shm.total_bytes is None:
        return skip("system.shm", "/dev/shm not found")
    size = shm.total_bytes
    gpus = len(visible_gpus(snap))
    need = ctx.min_shm_bytes
    have = human_bytes(size)
    if gpus > 1 and size < need // 4:
        return [
            result(
                "system.shm",
                "fail",
                f"/dev/shm is {have} with {gpus} GPUs: NCCL fails with 'unhandled system "
                "error' / 'Error while creating shared memory segment'",
                SHM_FIX,
            )
        ]
    if size < need:
        users = (
            "NCCL between the GPUs and DataLoader workers"
            if gpus > 1
            else ("DataLoader workers and multiprocessing tensors")
        )
        return [
            result(
                "system.shm",
                "warn",
                f"/dev/shm is {have} (below {human_bytes(need)}): {users} may fail with "
                "'Bus error' or 'No space left on device'",
                SHM_FIX,
            )
        ]
    return [result("system.shm", "ok", f"/dev/shm is {have}")]


def check_memory(ctx: CheckContext) -> list[CheckResult]:
    snap = ctx.snapshot
    limit = snap.cgroup.memory_limit_bytes
    host = snap.host_memory_bytes
    gpu_mem = gpu_memory_total(visible_gpus(snap))
    if limit is None or (host is not None and limit >= host):
        where = f"; host has {human_bytes(host)}" if host else ""
        return [result("system.memory", "ok", f"no container memory limit{where}")]
    host_text = f" of the host's {human_bytes(host)}" if host else ""
    if gpu_mem and limit < gpu_mem:
        return [
            result(
                "system.memory",
                "warn",
                f"container memory limit {human_bytes(limit)}{host_text} is below the "
                f"{human_bytes(gpu_mem)} of GPU memory: loading or staging a model that fills "
                "the GPUs is OOM-killed on the host side",
                "raise the container's memory limit (Kubernetes resources.limits.memory) to at "
                "least the GPUs' total memory",
            )
        ]
    return [
        result("system.memory", "ok", f"container memory limit {human_bytes(limit)}{host_text}")
    ]


def check_cpu(ctx: CheckContext) -> list[CheckResult]:
    snap = ctx.snapshot
    quota = snap.cgroup.cpu_quota_cores
    threads = snap.torch.num_threads if snap.torch else None
    if quota is None:
        return [result("system.cpu", "ok", f"no CPU quota; {snap.cpu_count or '?'} CPUs")]
    cores = max(1, math.ceil(quota))
    if threads is not None and threads > cores:
        return [
            result(
                "system.cpu",
                "warn",
                f"torch uses {threads} threads but the container's CPU quota is {quota:g} "
                "cores: oversubscribed threads are throttled and CPU ops slow down",
                f"set OMP_NUM_THREADS={cores} (or torch.set_num_threads({cores}))",
            )
        ]
    return [result("system.cpu", "ok", f"CPU quota {quota:g} cores, torch threads {threads}")]


def check_env(ctx: CheckContext) -> list[CheckResult]:
    env = ctx.snapshot.env
    results: list[CheckResult] = []
    if env.get("CUDA_LAUNCH_BLOCKING", "0").strip() not in {"", "0"}:
        results.append(
            result(
                "env.variables",
                "warn",
                "CUDA_LAUNCH_BLOCKING is set: every kernel launch waits for the GPU, which is "
                "for debugging only and makes serving several times slower",
                "unset CUDA_LAUNCH_BLOCKING",
                "CUDA_LAUNCH_BLOCKING",
            )
        )
    conf = env.get("PYTORCH_CUDA_ALLOC_CONF")
    if conf:
        unknown = []
        for item in conf.split(","):
            key = item.split(":", 1)[0].strip()
            if key and key not in ALLOC_CONF_KEYS:
                unknown.append(key)
            elif key and ":" not in item:
                unknown.append(f"{key} (no value)")
        if unknown:
            results.append(
                result(
                    "env.variables",
                    "warn",
                    f"PYTORCH_CUDA_ALLOC_CONF has unrecognised option(s): {', '.join(unknown)}; "
                    "torch refuses unrecognised keys at the first CUDA allocation",
                    "use key:value pairs separated by commas, e.g. expandable_segments:True",
                    "PYTORCH_CUDA_ALLOC_CONF",
                )
            )
    return results or [result("env.variables", "ok", "no risky CUDA/PyTorch variable set")]
