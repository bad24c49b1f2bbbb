"""Checks of the pod options a real cluster needs: env, Secrets, identity, labels, GPU kind.

Each parser returns plain tuples for the frozen `DeploySpec` or raises `UsageError` with
the option, the problem and an example of the fix.
"""

from __future__ import annotations

import re
from decimal import Decimal

from torchrig.errors import UsageError

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"  # GPU feature discovery's label of the model
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
# credentials never go into a manifest as plain values: they belong in a Secret
_CREDENTIAL = re.compile(
    r"(SECRET|PASSWORD|PASSWD|TOKEN|ACCESS_KEY|ACCOUNT_KEY|CONNECTION_STRING|PRIVATE_KEY|SAS)",
    re.IGNORECASE,
)
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_KEY = re.compile(
    r"^(?:[a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^(?:[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
# MIG profiles as the device plugin's mixed strategy names them: nvidia.com/mig-1g.10gb
_MIG = re.compile(r"^nvidia\.com/mig-(?P<slices>[1-7])g\.(?P<gb>[0-9]+)gb(?:\+me)?$")
# variables the manifests derive from other options: set through those, never --env
MANAGED_ENV = {
    "TORCHRIG_SERVE_HOST": "nothing (the pod listens on 0.0.0.0)",
    "TORCHRIG_SERVE_PORT": "nothing (the probes and Service use 8000)",
    "TORCHRIG_SERVE_DRAIN_TIMEOUT_S": "--drain-timeout-s (the grace period follows it)",
    "TORCHRIG_SERVE_WORKERS": "--workers (CPU and /dev/shm follow it)",
    "TORCHRIG_SERVE_MANAGEMENT_TOKEN_FILE": "--token-secret",
    "HOME": "nothing (the image's user home)",
}
RESERVED_LABEL_PREFIXES = ("app.kubernetes.io/name", "app.kubernetes.io/instance")


def check_object_name(name: str, *, what: str, example: str) -> str:
    """A DNS-1123 subdomain (Secret, ServiceAccount, PriorityClass names)."""
    if len(name) > 253 or not _SUBDOMAIN.match(name):
        raise UsageError(
            f"{what} {name!r} is not a valid object name: use lower-case letters, digits, "
            f"'-' and '.', e.g. {example}"
        )
    return name


def parse_env(items: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """`KEY=VALUE` pairs for the container; a credential is refused (use a Secret)."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not _ENV_NAME.match(key):
            raise UsageError(
                f"--env {item!r} is not KEY=VALUE with a valid variable name, "
                "e.g. --env AWS_REGION=eu-west-1"
            )
        if key in MANAGED_ENV:
            raise UsageError(
                f"--env {key} is set by torchrig from its options: use {MANAGED_ENV[key]}"
            )
        if _CREDENTIAL.search(key):
            raise UsageError(
                f"--env {key}=... looks like a credential, which would be readable by anyone "
                "who can read the manifest: put it in a Secret and give --env-from-secret NAME "
                "(or use the pod's identity with --service-account)"
            )
        pairs[key] = value
    return tuple(pairs.items())


def parse_metadata(items: tuple[str, ...], *, what: str) -> tuple[tuple[str, str], ...]:
    """`KEY=VALUE` labels (`what` "--labels", values checked) or annotations (any value)."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not _LABEL_KEY.match(key) or len(key.partition("/")[0]) > 253:
            raise UsageError(
                f"{what} {item!r} is not KEY=VALUE with a valid key (an optional DNS prefix "
                "and a name of up to 63 characters), e.g. team=ranking"
            )
        if what == "--labels" and not _LABEL_VALUE.match(value):
            raise UsageError(
                f"--labels {item!r}: a label value is up to 63 letters, digits, '-', '_' "
                "and '.', starting and ending with a letter or digit"
            )
        if key in RESERVED_LABEL_PREFIXES:
            raise UsageError(
                f"{what} {key} is set by torchrig (the selectors use it): choose another key"
            )
        pairs[key] = value
    return tuple(pairs.items())


def parse_gpu_products(items: tuple[str, ...]) -> tuple[str, ...]:
    """GPU models as GPU feature discovery labels them (NVIDIA-H100-80GB-HBM3)."""
    for item in items:
        if not item or not _LABEL_VALUE.match(item):
            raise UsageError(
                f"--gpu-product {item!r} is not a label value: give the product as GPU "
                "feature discovery labels it (kubectl get nodes -L nvidia.com/gpu.product), "
                "e.g. NVIDIA-H100-80GB-HBM3"
            )
    return tuple(dict.fromkeys(items))


def check_gpu_resource(resource: str) -> str:
    """`nvidia.com/gpu` or a MIG profile of the mixed strategy (`nvidia.com/mig-1g.10gb`)."""
    if resource == GPU_RESOURCE or _MIG.match(resource):
        return resource
    fix = (
        "nvidia.com/gpu, or a MIG profile such as nvidia.com/mig-1g.10gb or nvidia.com/mig-3g.40gb"
    )
    if resource.startswith("mig-"):
        raise UsageError(
            f"--gpu-resource {resource!r} lacks its prefix: give nvidia.com/{resource}"
        )
    raise UsageError(
        f"--gpu-resource {resource!r} is not a GPU resource torchrig knows: give {fix}"
    )


def mig_memory_gib(resource: str) -> int:
    """The GPU memory of one MIG slice in GiB (10 for nvidia.com/mig-1g.10gb), 0 for a GPU."""
    match = _MIG.match(resource)
    return int(match["gb"]) if match else 0


def milli_cpu(count: Decimal) -> str:
    """A CPU quantity: "4" for whole cores, "2500m" otherwise."""
    return str(int(count)) if count == count.to_integral_value() else f"{int(count * 1000)}m"
