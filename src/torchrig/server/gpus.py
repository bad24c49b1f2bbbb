"""Which GPUs each `serve --workers` process gets, decided in the parent without CUDA.

The parent gives each worker its own share through CUDA_VISIBLE_DEVICES: worker i takes
GPUs i, i + workers, ... In a worker, `device = "auto"` places a replica of each model on
every GPU of its share (torchrig.runtime.placement), so every GPU of the pod is used
whatever the worker count: with as many workers as GPUs (what `torchrig deploy k8s
--gpus N` renders) each worker owns one GPU; with fewer, each worker spreads over its
share; with more, they share GPUs evenly. Without the split, every worker would see
every GPU and place a replica of every model on each.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

log = logging.getLogger("torchrig.server")

GPU_ENV = "CUDA_VISIBLE_DEVICES"


def visible_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs this process may use, named as a child's CUDA_VISIBLE_DEVICES takes them:
    the entries of CUDA_VISIBLE_DEVICES when it is set (indices, GPU-/MIG- UUIDs), else
    indices 0..N-1 of the N devices NVML sees (what a container was given); [] without a
    GPU. CUDA is never initialised here (a parent holding a context wastes GPU memory)."""
    environ = os.environ if environ is None else environ
    given = environ.get(GPU_ENV)
    if given is not None:
        return [item.strip() for item in given.split(",") if item.strip()]
    try:
        import pynvml
    except ImportError:  # pragma: no cover - nvidia-ml-py is a dependency
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:  # no driver: no GPU
        return []
    try:
        return [str(index) for index in range(pynvml.nvmlDeviceGetCount())]
    except pynvml.NVMLError as exc:
        log.warning("cannot count the GPUs (%s): every worker sees all of them", exc)
        return []
    finally:
        pynvml.nvmlShutdown()


def split_gpus(gpus: list[str], workers: int) -> list[list[str]]:
    """Each worker's GPUs, round robin; [] for every worker when there are no GPUs."""
    if not gpus:
        return [[] for _ in range(workers)]
    if workers >= len(gpus):
        return [[gpus[index % len(gpus)]] for index in range(workers)]
    return [gpus[index::workers] for index in range(workers)]


def describe_split(shares: list[list[str]]) -> str | None:
    """A warning when the split is uneven: the kernel spreads connections evenly over the
    workers, so a worker with more GPUs than another leaves part of them idle (and a GPU
    shared by more workers than another is busier), or a worker given several MIG slices
    (a CUDA process sees only the first MIG slice it is given)."""
    several_mig = [share for share in shares if len(share) > 1 and share[0].startswith("MIG-")]
    if several_mig:
        slices = len({gpu for share in shares for gpu in share})
        return (
            f"{slices} MIG slices for {len(shares)} workers: a CUDA process sees only the "
            f"first MIG slice it is given, so the others idle; give --workers {slices}"
        )
    counts = sorted({len(share) for share in shares})
    if len(counts) < 2:
        per_gpu: dict[str, int] = {}
        for share in shares:
            for gpu in share:
                per_gpu[gpu] = per_gpu.get(gpu, 0) + 1
        if len(set(per_gpu.values())) < 2:
            return None
        gpus = len(per_gpu)
        return (
            f"{len(shares)} workers on {gpus} GPUs: some GPUs serve more workers than others; "
            f"give a multiple of {gpus} to --workers for an even load"
        )
    gpus = len({gpu for share in shares for gpu in share})
    return (
        f"{gpus} GPUs for {len(shares)} workers: some workers have {counts[-1]} GPUs, others "
        f"{counts[0]}, but each takes an equal share of the requests, so part of the larger "
        f"shares stays idle; give --workers {gpus} (or a divisor of it) for an even load"
    )


def replica_gpus(
    shares: list[list[str]], requested: str | list[str] = "auto", instances: int = 1
) -> list[list[str]]:
    """The GPUs (as CUDA_VISIBLE_DEVICES names them) each worker places a model's
    replicas on: its share seen through `torchrig.runtime.placement` ([] on the CPU)."""
    from torchrig.runtime.placement import place

    placed = []
    for share in shares:
        devices = [p.device for p in place(requested, len(share), instances)]
        placed.append([share[int(d.partition(":")[2])] for d in devices if d.startswith("cuda")])
    return placed
