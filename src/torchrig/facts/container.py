"""Whether we run in a container, which runtime made it, and whether it asked for GPUs.

The doctor uses this to tell "this container was started without GPU access" (the
image asks for GPUs, no /dev/nvidia* nodes) from "this host has no GPU".
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torchrig.facts._files import read_text
from torchrig.facts.model import ContainerFacts

# Values of NVIDIA_VISIBLE_DEVICES that mean "no GPU" to the NVIDIA container runtime.
_NO_GPU_VALUES = frozenset({"", "void", "none"})

# Substrings of /proc/1/cgroup and the runtime they reveal, most specific first.
_CGROUP_HINTS = (
    ("kubepods", "kubernetes"),
    ("libpod", "podman"),
    ("docker", "docker"),
    ("containerd", "containerd"),
    ("lxc", "lxc"),
)


def read_container(environ: Mapping[str, str], root: Path = Path("/")) -> ContainerFacts:
    """Container facts from marker files and device nodes under `root` and from `environ`."""
    runtime = _detect_runtime(environ, root)
    requested, hint = _gpu_request(environ)
    return ContainerFacts(
        in_container=runtime is not None,
        runtime=runtime,
        gpu_requested=requested,
        gpu_request_hint=hint,
        device_nodes=sorted(str(path) for path in (root / "dev").glob("nvidia*")),
    )


def _detect_runtime(environ: Mapping[str, str], root: Path) -> str | None:
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return "kubernetes"
    if (root / "run" / ".containerenv").exists():
        return "podman"
    if (root / ".dockerenv").exists():
        return "docker"
    init_cgroup = read_text(root / "proc" / "1" / "cgroup") or ""
    for marker, runtime in _CGROUP_HINTS:
        if marker in init_cgroup:
            return runtime
    # systemd-nspawn, podman and others set `container=` for the container's init.
    declared = environ.get("container")
    return declared or None


def _gpu_request(environ: Mapping[str, str]) -> tuple[bool, str | None]:
    visible = environ.get("NVIDIA_VISIBLE_DEVICES")
    if visible is not None and visible.strip().lower() not in _NO_GPU_VALUES:
        # CUDA base images set it to "all"; the Kubernetes device plugin sets it to the
        # UUIDs of the GPUs the pod was given.
        return True, f"NVIDIA_VISIBLE_DEVICES={visible}"
    return False, None
