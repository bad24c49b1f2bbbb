"""The `--deep` probes, run in order inside the probe process."""

from __future__ import annotations

import time
from pathlib import Path

from torchrig.facts.model import AllReduceProbe, ProbeFacts
from torchrig.facts.probes.allreduce import probe_allreduce
from torchrig.facts.probes.kernel import probe_kernel
from torchrig.facts.probes.sdpa import probe_sdpa

# Time kept back from the all-reduce's share so that the probe process can still print
# its result before the parent's deadline.
_RESERVE_S = 2.0


def run_suite(*, budget_s: float, workdir: Path) -> ProbeFacts:
    """Kernel and SDPA probes on every CUDA device (or the CPU), then an all-reduce."""
    start = time.monotonic()
    try:
        import torch
    except ImportError as exc:
        reason = "torch is not installed" if exc.name == "torch" else f"importing torch: {exc}"
        return ProbeFacts(error=reason, duration_s=time.monotonic() - start)

    cuda_devices = int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    devices = [f"cuda:{index}" for index in range(cuda_devices)] or ["cpu"]
    kernels = [probe_kernel(device) for device in devices]
    sdpa = [probe_sdpa(device) for device in devices]

    if cuda_devices:
        torch.cuda.empty_cache()  # the all-reduce workers need the memory the probes cached
    backend, world_size = ("nccl", cuda_devices) if cuda_devices else ("gloo", 2)
    remaining_s = budget_s - (time.monotonic() - start) - _RESERVE_S
    allreduce: AllReduceProbe
    if not torch.distributed.is_available():
        allreduce = AllReduceProbe(
            backend=backend,
            world_size=world_size,
            ok=False,
            error="this torch build has no torch.distributed",
        )
    elif remaining_s <= 1.0:
        allreduce = AllReduceProbe(
            backend=backend,
            world_size=world_size,
            ok=False,
            error=f"skipped: the {budget_s:.0f} s probe budget was spent",
        )
    else:
        allreduce = probe_allreduce(
            backend=backend, world_size=world_size, workdir=workdir, timeout_s=remaining_s
        )
    return ProbeFacts(
        kernels=kernels, sdpa=sdpa, allreduce=allreduce, duration_s=time.monotonic() - start
    )
