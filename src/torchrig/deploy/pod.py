"""The torchrig server's container and pod settings, shared by the Deployment and KServe.

What teams get wrong by hand, and what this module fixes once: GPU limits, a
memory-backed /dev/shm sized to the GPU count (Docker's default is 64 MiB), a startup
probe so warm-up is not killed by liveness, a drain longer than the server's own, a
non-root read-only container with every capability dropped, and scheduling onto the
GPU pool.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from torchrig.deploy.options import GPU_PRODUCT_LABEL
from torchrig.deploy.spec import DeploySpec
from torchrig.deploy.storage import VOLUME_NAME
from torchrig.image.render import UID
from torchrig.settings import ENV_PREFIX, ServeSettings

Manifest = dict[str, Any]

HTTP_PORT = ServeSettings.port  # the serve image EXPOSEs it
PORT_NAME = "http"
GRPC_PORT = 8001  # the server's V2 gRPC service (Triton's port); probes stay on HTTP
GRPC_PORT_NAME = "grpc"
HOME = "/home/torchrig"  # the serve image's user home and WORKDIR
CACHE_DIR = f"{HOME}/.cache"
TOKEN_DIR = "/var/run/secrets/torchrig"
TOKEN_KEY = "token"
PRESTOP_SLEEP_S = 10  # time for endpoint removal to reach every proxy before SIGTERM
RELEASE_MARGIN_S = 20  # after the drain: releasing models, flushing logs
STARTUP_BUDGET_S = 900  # doctor, model download, load and warm-up
APP_LABEL = "app.kubernetes.io/name"
APP = "torchrig"  # also the Prometheus job name the alert rules select


def labels(spec: DeploySpec) -> dict[str, str]:
    """The labels every object of the deployment carries."""
    return {APP_LABEL: APP, "app.kubernetes.io/instance": spec.name}


def object_labels(spec: DeploySpec) -> dict[str, str]:
    """The selector labels and the user's --labels: on every object and on the pods."""
    return {**dict(spec.labels), **labels(spec)}


def metadata(spec: DeploySpec, name: str, **extra: Any) -> Manifest:
    meta: Manifest = {"name": name}
    if spec.namespace:
        meta["namespace"] = spec.namespace
    meta["labels"] = object_labels(spec)
    annotations = {**dict(spec.annotations), **extra.pop("annotations", {})}
    if annotations:
        meta["annotations"] = annotations
    meta.update(extra)
    return meta


def pod_annotations(spec: DeploySpec) -> dict[str, str]:
    return {**dict(spec.annotations), "kubectl.kubernetes.io/default-container": "server"}


def token_secret_name(spec: DeploySpec) -> str:
    return spec.token_secret or f"{spec.name}-management-token"


def serve_env(field: str, value: object) -> Manifest:
    """An env var for one `ServeSettings` field (a renamed field fails here, not in a pod)."""
    if field not in {f.name for f in dataclasses.fields(ServeSettings)}:
        raise RuntimeError(f"ServeSettings has no field {field!r}")  # a torchrig bug
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))  # 30, not 30.0
    else:
        text = str(value)
    return {"name": f"{ENV_PREFIX}SERVE_{field.upper()}", "value": text}


def termination_grace_s(spec: DeploySpec) -> int:
    """preStop sleep + the server's drain + release: SIGKILL never cuts a drain short."""
    return PRESTOP_SLEEP_S + math.ceil(spec.drain_timeout_s) + RELEASE_MARGIN_S


def resources(spec: DeploySpec) -> Manifest:
    """GPU (or MIG slice) and memory requests equal to limits; CPU requested, not capped
    (no throttling)."""
    gpu = spec.gpu_resource
    return {
        "requests": {"cpu": spec.cpu, "memory": spec.memory, gpu: spec.gpus},
        "limits": {"memory": spec.memory, gpu: spec.gpus},
    }


def user_env(spec: DeploySpec, env: list[Manifest]) -> list[Manifest]:
    """torchrig's env with the user's --env on top (a user value replaces torchrig's)."""
    given = dict(spec.env)
    if spec.storage.extra == "azure":  # adlfs is anonymous unless told otherwise
        given.setdefault("AZURE_STORAGE_ANON", "false")
    kept = [item for item in env if item["name"] not in given]
    return kept + [{"name": key, "value": value} for key, value in given.items()]


def container(
    spec: DeploySpec,
    *,
    name: str,
    repository: str,
    port: int,
    port_name: str,
    with_resources: bool = True,
    with_models: bool = True,
    with_grpc: bool = True,
) -> Manifest:
    """The server container: `torchrig serve REPOSITORY` after the image's quick doctor."""
    env = [
        serve_env("host", "0.0.0.0"),
        serve_env("port", port),
        serve_env("log_format", "json"),
        serve_env("drain_timeout_s", spec.drain_timeout_s),
        serve_env("require_gpu", True),
        *([serve_env("workers", spec.workers)] if spec.workers > 1 else []),
        {"name": f"{ENV_PREFIX}DOCTOR_REQUIRE_GPU", "value": "true"},
        # the bearer token of the management API, as a file from the Secret
        serve_env("management_token_file", f"{TOKEN_DIR}/{TOKEN_KEY}"),
        {"name": "HOME", "value": HOME},
        {"name": "TMPDIR", "value": "/tmp"},
        {"name": "XDG_CACHE_HOME", "value": CACHE_DIR},
        {"name": "TORCHINDUCTOR_CACHE_DIR", "value": f"{CACHE_DIR}/torchinductor"},
        {"name": "TRITON_CACHE_DIR", "value": f"{CACHE_DIR}/triton"},
    ]
    body: Manifest = {
        "name": name,
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        # the image's ENTRYPOINT runs the quick doctor first; args replace only its CMD
        "args": ["torchrig", "serve", repository],
        "ports": [{"name": port_name, "containerPort": port, "protocol": "TCP"}],
        "env": user_env(spec, env),
        # readiness as the startup probe: liveness waits out doctor, download and warm-up
        "startupProbe": _http_probe(
            "/v2/health/ready", port_name, period_s=10, timeout_s=5, failures=STARTUP_BUDGET_S // 10
        ),
        "readinessProbe": _http_probe(
            "/v2/health/ready", port_name, period_s=5, timeout_s=3, failures=2
        ),
        "livenessProbe": _http_probe(
            "/v2/health/live", port_name, period_s=10, timeout_s=5, failures=3
        ),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SLEEP_S)]}}},
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "cache", "mountPath": CACHE_DIR},
            {"name": "management-token", "mountPath": TOKEN_DIR, "readOnly": True},
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if with_grpc:  # the server's V2 gRPC service, beside HTTP
        grpc = {"name": GRPC_PORT_NAME, "containerPort": GRPC_PORT, "protocol": "TCP"}
        body["ports"].append(grpc)
    if spec.env_from_secrets:  # credentials (AWS_*, GOOGLE_*, AZURE_*) stay in the Secret
        body["envFrom"] = [{"secretRef": {"name": name}} for name in spec.env_from_secrets]
    if with_models and spec.storage.kind == "volume":
        mount: Manifest = {"name": VOLUME_NAME, "mountPath": repository, "readOnly": True}
        if spec.storage.sub_path:
            mount["subPath"] = spec.storage.sub_path
        body["volumeMounts"].append(mount)
    if with_resources:
        body["resources"] = resources(spec)
    return body


def _http_probe(path: str, port: str, *, period_s: int, timeout_s: int, failures: int) -> Manifest:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period_s,
        "timeoutSeconds": timeout_s,
        "failureThreshold": failures,
    }


def container_security() -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security() -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "fsGroup": UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def volumes(spec: DeploySpec, *, with_models: bool = True) -> list[Manifest]:
    """/dev/shm in memory sized to the GPUs; writable /tmp and cache under a read-only root;
    the management token as a file readable by the server's group only; the model volume."""
    models = []
    if with_models and spec.storage.kind == "volume":
        models = [{"name": VOLUME_NAME, **spec.storage.volume_source()}]
    return [
        *models,
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "8Gi"}},
        {"name": "cache", "emptyDir": {"sizeLimit": "8Gi"}},
        {
            "name": "management-token",
            "secret": {
                "secretName": token_secret_name(spec),
                "defaultMode": 0o440,
                "items": [{"key": TOKEN_KEY, "path": TOKEN_KEY}],
            },
        },
    ]


def tolerations() -> list[Manifest]:
    """GPU node pools are commonly tainted nvidia.com/gpu (GKE, AKS, the GPU operator)."""
    return [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def node_selector(spec: DeploySpec) -> dict[str, str]:
    return dict(spec.node_selector)


def affinity(spec: DeploySpec) -> Manifest | None:
    """With --gpu-product: only nodes whose GPU feature discovery label names one of them."""
    if not spec.gpu_products:
        return None
    term = {
        "matchExpressions": [
            {"key": GPU_PRODUCT_LABEL, "operator": "In", "values": list(spec.gpu_products)}
        ]
    }
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
        }
    }


def pull_secrets(spec: DeploySpec) -> list[Manifest]:
    return [{"name": name} for name in spec.image_pull_secrets]


def placement(spec: DeploySpec) -> Manifest:
    """The optional pod fields: identity, registry credentials, priority, GPU model."""
    fields: Manifest = {}
    if spec.service_account:
        # IRSA and Azure Workload Identity project their own token; GKE's metadata server
        # needs none: the API token stays unmounted
        fields["serviceAccountName"] = spec.service_account
    if spec.image_pull_secrets:
        fields["imagePullSecrets"] = pull_secrets(spec)
    if spec.priority_class:
        fields["priorityClassName"] = spec.priority_class
    if (node_affinity := affinity(spec)) is not None:
        fields["affinity"] = node_affinity
    return fields
