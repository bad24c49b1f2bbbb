"""Where a model version's replicas go: a pure function of the request and the GPU count.

As Triton's instance groups do by default, `device = "auto"` puts one replica (one loaded
copy of the program, with `instances` CUDA lanes) on every GPU this process sees, so a
pod given N GPUs uses N; without a GPU it is one CPU replica. `"cuda:K"`, `"cuda"` and
`"cpu"` name one device, as before. `devices = [...]` in config.toml lists the replicas
explicitly, one per entry (an entry may repeat: two copies on one GPU, or two CPU
replicas); `serve --device` overrides both with its one device.

With `serve --workers`, each worker sees only its share of the GPUs (CUDA_VISIBLE_DEVICES,
`torchrig.server.gpus`), so "auto" places the worker's replicas on that share.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from torchrig.errors import ConfigError

_DEVICE = re.compile(r"cpu|cuda(:[0-9]+)?")


@dataclass(frozen=True)
class Placement:
    """One replica: the device it loads on and its instances (CUDA lanes / workers)."""

    device: str  # "cpu" or "cuda:K"
    instances: int


def place(requested: str | Sequence[str], cuda_count: int, instances: int) -> list[Placement]:
    """The replicas for `requested` ("auto", "cpu", "cuda", "cuda:K", or a list of the
    last three) on a process that sees `cuda_count` GPUs, `instances` per replica.
    A device that is not there is a `ConfigError` naming what is visible and the fix."""
    if instances < 1:
        raise ConfigError(f"instances must be >= 1 (got {instances}); set it in config.toml.")
    if isinstance(requested, str):
        if requested == "auto":
            if cuda_count > 0:
                return [Placement(f"cuda:{index}", instances) for index in range(cuda_count)]
            return [Placement("cpu", instances)]
        return [Placement(_one(requested, cuda_count), instances)]
    if not requested:
        raise ConfigError('devices is empty; list at least one device, e.g. ["cuda:0"].')
    return [Placement(_one(device, cuda_count), instances) for device in requested]


def _one(device: str, cuda_count: int) -> str:
    if not _DEVICE.fullmatch(device):
        raise ConfigError(
            f'device {device!r} is not one of "cpu", "cuda", "cuda:N" '
            '("auto" stands alone, not in a devices list).'
        )
    if device == "cpu":
        return "cpu"
    index = int(device.partition(":")[2] or 0)
    if cuda_count == 0:
        raise ConfigError(
            f"device {device} requested but CUDA is not available here (no GPU visible, or "
            'a CPU build of torch); set device = "cpu" (or "auto") in the model\'s '
            "config.toml, or run `torchrig doctor` to see why."
        )
    if index >= cuda_count:
        raise ConfigError(
            f"device {device} does not exist: {cuda_count} GPU(s) visible to this process "
            "(with serve --workers, each worker sees its share as cuda:0..); use "
            'device = "auto" to place on every visible GPU.'
        )
    return f"cuda:{index}"


def visible_cuda_count() -> int:
    """GPUs torch can use in this process (0 with a CPU build or without a driver)."""
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def describe(placements: Sequence[Placement]) -> str:
    """ "cuda:0, cuda:1 (2 instances each)" for logs and the config endpoint."""
    devices = ", ".join(p.device for p in placements)
    count = placements[0].instances if placements else 0
    return f"{devices} ({count} instance{'' if count == 1 else 's'} each)"
