"""Collect what this machine is into a plain `Snapshot` ("collect, then judge").

`collect_snapshot` never raises: a missing piece (no NVML, no GPU, no torch, no
cgroup files, not Linux) is recorded as None or an empty list, with the reason in
the matching `*_error` field. `doctor` and `envlock` judge the result elsewhere.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping

from torchrig.facts.cgroup import read_cgroup
from torchrig.facts.container import read_container
from torchrig.facts.environment import ENV_WHITELIST, ENV_WHITELIST_PREFIXES, whitelisted_env
from torchrig.facts.libraries import find_library_candidates, read_loaded_libraries
from torchrig.facts.model import Snapshot
from torchrig.facts.nvml import read_nvml, read_proc_driver
from torchrig.facts.probes import run_probes
from torchrig.facts.system import (
    read_cpu_count,
    read_host_memory,
    read_hostname,
    read_os,
    read_python,
    read_shm,
)
from torchrig.facts.torch_build import read_torch, torch_gpus

__all__ = [
    "ENV_WHITELIST",
    "ENV_WHITELIST_PREFIXES",
    "collect_snapshot",
    "whitelisted_env",
]


def collect_snapshot(
    *,
    deep: bool = False,
    probe_timeout_s: float = 180.0,
    environ: Mapping[str, str] | None = None,
) -> Snapshot:
    """Take a snapshot of this machine; with `deep`, also run the device probes.

    `environ` stands for the process environment (default `os.environ`): it decides
    which variables are recorded, how the container and LD_LIBRARY_PATH are read, and
    is the environment the probe process runs with. The quick snapshot launches no
    kernel; the probes run in a child process limited to `probe_timeout_s`.
    """
    env = os.environ if environ is None else environ
    torch_facts, torch_error = read_torch()
    nvml = read_nvml()
    driver, gpus = nvml.driver, nvml.gpus
    if nvml.error is not None:
        driver = read_proc_driver()
        gpus = torch_gpus() if torch_facts is not None and torch_facts.cuda_available else []
    return Snapshot(
        taken_at=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        hostname=read_hostname(),
        os=read_os(),
        python=read_python(),
        torch=torch_facts,
        torch_error=torch_error,
        driver=driver,
        nvml_error=nvml.error,
        gpus=gpus,
        # After torch was imported and cuDNN/NCCL loaded, so that they are mapped.
        libraries=read_loaded_libraries(),
        library_candidates=find_library_candidates(env),
        cgroup=read_cgroup(),
        host_memory_bytes=read_host_memory(),
        cpu_count=read_cpu_count(),
        shm=read_shm(),
        container=read_container(env),
        env=whitelisted_env(env),
        probes=run_probes(timeout_s=probe_timeout_s, environ=environ) if deep else None,
    )
