"""Which GPUs each `serve --workers` process gets, decided in the parent without CUDA.

A worker's models go on `device = "auto"`, the first GPU it sees: unsplit, every worker
of a 4-GPU pod would stack its models on GPU 0. So the parent gives each worker its own
share through CUDA_VISIBLE_DEVICES, as Triton gives each GPU its own instance: worker i
takes GPUs i, i + workers, ... With as many workers as GPUs (what `torchrig deploy k8s
--gpus N` renders) each worker owns one GPU; with more workers they share GPUs evenly.
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
    """A warning when some worker sees several GPUs: "auto" places its models on the first."""
    several = [share for share in shares if len(share) > 1]
    if not several:
        return None
    count = sum(len(share) for share in shares)
    return (
        f"{count} GPUs for {len(shares)} workers: a worker's models go on its first GPU "
        f'(device = "auto"), so {count - len(shares)} GPUs stay idle; give --workers '
        f"{count} to use every GPU"
    )
