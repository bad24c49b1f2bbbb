"""`torchrig deploy kserve`: torchrig as a KServe serving runtime.

torchrig speaks the Open Inference Protocol, so the `ServingRuntime` declares
`protocolVersions: [v2, grpc-v2]` and a model format of its own ("torchrig"), and the
`InferenceService` names that runtime explicitly. KServe's storage initializer copies the
repository at `storageUri` to /mnt/models, which the server then serves.

The InferenceService runs in KServe's raw deployment mode (a Deployment, no Knative: a GPU
service does not scale to zero, and a cold start costs minutes) with
`autoscalerClass: external`, so the HorizontalPodAutoscaler rendered here -- the same
in-flight-per-pod signal as `deploy k8s` -- scales the Deployment KServe creates.
"""

from __future__ import annotations

import re

from torchrig.deploy.k8s import autoscaler, disruption_budget, pod_monitor, token_secret
from torchrig.deploy.pod import (
    Manifest,
    affinity,
    container,
    labels,
    metadata,
    node_selector,
    object_labels,
    placement,
    pod_security,
    pull_secrets,
    resources,
    termination_grace_s,
    tolerations,
    volumes,
)
from torchrig.deploy.spec import DeploySpec
from torchrig.errors import UsageError

MODEL_FORMAT = "torchrig"
MODEL_FORMAT_VERSION = "1"
MODEL_DIR = "/mnt/models"  # where KServe's storage initializer puts storageUri
KSERVE_PORT = 8080  # KServe's convention for a runtime's HTTP port
KSERVE_PORT_NAME = "http1"  # a name Knative accepts too
CONTAINER = "kserve-container"  # the name KServe merges the predictor's model spec into
MONITORS = ("podmonitor", "none")
_STORAGE_URI = re.compile(r"^(s3|gs|pvc|https?|hdfs|webhdfs|hf|oci)://\S+$")


def predictor_deployment(spec: DeploySpec) -> str:
    """The Deployment KServe creates for the predictor in raw deployment mode."""
    return f"{spec.name}-predictor"


def check_storage_uri(url: str) -> str:
    """KServe downloads the model repository itself: it needs a storage URI it knows."""
    if not _STORAGE_URI.match(url):
        raise UsageError(
            f"--model-repo {url!r} is not a storage URI KServe can download: use s3://, gs://, "
            "pvc://, https://, hf:// or oci://, e.g. s3://models/ranking"
        )
    return url


def render_kserve(
    spec: DeploySpec, *, monitor: str = "podmonitor", token: str | None = None
) -> list[Manifest]:
    """ServingRuntime, InferenceService, and the Secret, PDB, HPA and PodMonitor around them."""
    if monitor not in MONITORS:
        raise ValueError(f"monitor must be one of {MONITORS}, not {monitor!r}")
    check_storage_uri(spec.storage.kserve_uri())
    docs: list[Manifest] = []
    if spec.token_secret is None:
        docs.append(token_secret(spec, token))
    docs += [serving_runtime(spec), inference_service(spec), disruption_budget(spec, labels(spec))]
    if spec.autoscaled:
        docs.append(autoscaler(spec, "Deployment", predictor_deployment(spec)))
    if monitor == "podmonitor":
        docs.append(pod_monitor(spec, labels(spec), KSERVE_PORT_NAME))
    return docs


def serving_runtime(spec: DeploySpec) -> Manifest:
    """The runtime: torchrig's container (probes, security, /dev/shm) for the torchrig format."""
    server = container(
        spec,
        name=CONTAINER,
        repository=MODEL_DIR,
        port=KSERVE_PORT,
        port_name=KSERVE_PORT_NAME,
        with_resources=False,  # per model, in the InferenceService
        with_models=False,  # KServe mounts a pvc:// storageUri itself
        # KServe routes one declared port per predictor (Knative's rule, kept in raw mode
        # by older releases): HTTP; the server still listens for gRPC on 8001
        with_grpc=False,
    )
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": metadata(spec, spec.name),
        "spec": {
            "supportedModelFormats": [
                {"name": MODEL_FORMAT, "version": MODEL_FORMAT_VERSION, "autoSelect": False}
            ],
            "protocolVersions": ["v2", "grpc-v2"],
            "multiModel": False,
            "containers": [server],
            # KServe mounts a pvc:// storageUri itself, at /mnt/models
            "volumes": volumes(spec, with_models=False),
            "nodeSelector": node_selector(spec),
            "tolerations": tolerations(),
            **_runtime_placement(spec),
        },
    }


def _runtime_placement(spec: DeploySpec) -> Manifest:
    """Registry credentials for the runtime's image, and the GPU model it needs."""
    fields: Manifest = {}
    if spec.image_pull_secrets:
        fields["imagePullSecrets"] = pull_secrets(spec)
    if (node_affinity := affinity(spec)) is not None:
        fields["affinity"] = node_affinity
    return fields


def inference_service(spec: DeploySpec) -> Manifest:
    """The model: the repository at `storageUri`, served by the runtime above."""
    annotations = {
        "serving.kserve.io/deploymentMode": "RawDeployment",
        "serving.kserve.io/autoscalerClass": "external" if spec.autoscaled else "none",
    }
    low = spec.min_replicas if spec.replicas is None else spec.replicas
    high = spec.max_replicas if spec.replicas is None else spec.replicas
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata(spec, spec.name, annotations=annotations),
        "spec": {
            "predictor": {
                "minReplicas": low,
                "maxReplicas": high,
                "labels": object_labels(spec),
                **({"annotations": dict(spec.annotations)} if spec.annotations else {}),
                "automountServiceAccountToken": False,
                # the storage initializer reads s3:// and gs:// with this identity too
                **_predictor_identity(spec),
                "terminationGracePeriodSeconds": termination_grace_s(spec),
                "securityContext": pod_security(),
                "model": {
                    "modelFormat": {"name": MODEL_FORMAT, "version": MODEL_FORMAT_VERSION},
                    "runtime": spec.name,
                    "protocolVersion": "v2",
                    "storageUri": spec.storage.kserve_uri(),
                    "resources": resources(spec),
                },
            }
        },
    }


def _predictor_identity(spec: DeploySpec) -> Manifest:
    fields = placement(spec)
    return {
        key: fields[key] for key in ("serviceAccountName", "priorityClassName") if key in fields
    }
