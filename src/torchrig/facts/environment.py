"""The environment variables a snapshot may keep: a whitelist, never anything else.

Snapshots travel (attached to tickets, diffed across clusters), so an environment
variable is recorded only if it is known to matter for the CUDA stack and known
not to carry a secret. `torchrig env` uses the same whitelist.
"""

from __future__ import annotations

from collections.abc import Mapping

ENV_WHITELIST: frozenset[str] = frozenset(
    {
        "CUDA_VISIBLE_DEVICES",
        "NVIDIA_VISIBLE_DEVICES",
        "NVIDIA_DRIVER_CAPABILITIES",
        "NVIDIA_REQUIRE_CUDA",
        "NVIDIA_DISABLE_REQUIRE",
        "PYTORCH_CUDA_ALLOC_CONF",
        "PYTORCH_NVML_BASED_CUDA_CHECK",
        "LD_LIBRARY_PATH",
        "LD_PRELOAD",
        "CUDA_HOME",
        "CUDA_PATH",
        "CUDA_MODULE_LOADING",
        "CUDA_LAUNCH_BLOCKING",
        "CUDA_DEVICE_ORDER",
        "TORCH_CUDA_ARCH_LIST",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "KUBERNETES_SERVICE_HOST",
    }
)
"""Exact variable names kept in a snapshot."""

ENV_WHITELIST_PREFIXES: tuple[str, ...] = ("NCCL_",)
"""Prefixes whose variables are kept, unless the name looks like it holds a secret."""

_SECRET_MARKERS = ("TOKEN", "SECRET", "PASS", "KEY", "CRED", "AUTH")


def is_whitelisted(name: str) -> bool:
    """Whether the variable `name` may appear in a snapshot."""
    if name in ENV_WHITELIST:
        return True
    if not name.startswith(ENV_WHITELIST_PREFIXES):
        return False
    upper = name.upper()
    return not any(marker in upper for marker in _SECRET_MARKERS)


def whitelisted_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The whitelisted subset of `environ`, sorted by name."""
    return {name: environ[name] for name in sorted(environ) if is_whitelisted(name)}
