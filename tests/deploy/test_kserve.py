"""`deploy kserve`: a ServingRuntime speaking V2 and an InferenceService that uses it."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
import yaml

from torchrig.deploy import DeploySpec, render_kserve, to_yaml
from torchrig.deploy.kserve import MODEL_DIR, check_storage_uri
from torchrig.errors import UsageError
from torchrig.settings import load_settings

Validate = Callable[[dict[str, Any]], None]
IMAGE = "ghcr.io/acme/pytorch:2.11.0-cuda12.8-serve"


def make(**changes: Any) -> DeploySpec:
    return DeploySpec.create(
        **{"name": "ranker", "image": IMAGE, "model_repo": "s3://models/ranking", **changes}
    )


def rendered(spec: DeploySpec, **options: Any) -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all(to_yaml(render_kserve(spec, **options)))
    return {doc["kind"]: doc for doc in docs if doc}


@pytest.mark.parametrize(
    ("changes", "monitor"),
    [
        ({}, "podmonitor"),
        ({"gpus": 2, "namespace": "serving", "replicas": 2, "token_secret": "t"}, "none"),
    ],
)
def test_every_object_validates(
    validate_manifest: Validate, changes: dict[str, Any], monitor: str
) -> None:
    for doc in rendered(make(**changes), monitor=monitor).values():
        validate_manifest(doc)


def test_the_crd_schemas_can_fail(validate_manifest: Validate) -> None:
    docs = rendered(make())
    runtime = copy.deepcopy(docs["ServingRuntime"])
    runtime["spec"]["containers"][0]["imagePullPolicy"] = 3  # checked as a core Container
    with pytest.raises(jsonschema.ValidationError):
        validate_manifest(runtime)
    runtime = copy.deepcopy(docs["ServingRuntime"])
    runtime["spec"]["protocolVersion"] = ["v2"]  # the field is protocolVersions
    with pytest.raises(jsonschema.ValidationError):
        validate_manifest(runtime)
    service = copy.deepcopy(docs["InferenceService"])
    service["spec"]["predictor"]["model"]["resources"]["limits"]["memory"] = "lots"
    with pytest.raises(jsonschema.ValidationError):
        validate_manifest(service)


def test_runtime_speaks_v2_for_the_torchrig_format() -> None:
    docs = rendered(make())
    runtime, service = docs["ServingRuntime"]["spec"], docs["InferenceService"]
    assert runtime["protocolVersions"] == ["v2", "grpc-v2"]  # REST and gRPC (#16)
    formats = runtime["supportedModelFormats"]
    model = service["spec"]["predictor"]["model"]
    assert model["modelFormat"] in [{"name": f["name"], "version": f["version"]} for f in formats]
    assert model["runtime"] == docs["ServingRuntime"]["metadata"]["name"]
    assert model["protocolVersion"] == "v2"
    assert model["storageUri"] == "s3://models/ranking"
    (container,) = runtime["containers"]
    assert container["name"] == "kserve-container"  # KServe merges the model spec into it
    assert container["args"] == ["torchrig", "serve", MODEL_DIR]
    env = {e["name"]: e["value"] for e in container["env"]}
    serve = load_settings(environ=env).serve
    assert serve.port == container["ports"][0]["containerPort"] == 8080
    assert serve.host == "0.0.0.0"


def test_same_pod_hardening_as_k8s() -> None:
    docs = rendered(make(gpus=2))
    runtime = docs["ServingRuntime"]["spec"]
    (container,) = runtime["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    shm = next(v for v in runtime["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "4Gi"}
    assert runtime["tolerations"][0]["key"] == "nvidia.com/gpu"
    predictor = docs["InferenceService"]["spec"]["predictor"]
    assert predictor["securityContext"]["runAsNonRoot"] is True
    assert predictor["terminationGracePeriodSeconds"] > 30
    limits = predictor["model"]["resources"]["limits"]
    assert limits == {"memory": "32Gi", "nvidia.com/gpu": 2}


def test_raw_deployment_scaled_by_the_rendered_autoscaler() -> None:
    docs = rendered(make(min_replicas=2, max_replicas=6))
    annotations = docs["InferenceService"]["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert annotations["serving.kserve.io/autoscalerClass"] == "external"
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "ranker-predictor"  # KServe's Deployment
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    pod_labels = docs["InferenceService"]["spec"]["predictor"]["labels"]
    for selector in (
        docs["PodMonitor"]["spec"]["selector"]["matchLabels"],
        docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ):
        assert all(pod_labels[k] == v for k, v in selector.items())
    port = docs["ServingRuntime"]["spec"]["containers"][0]["ports"][0]["name"]
    assert docs["PodMonitor"]["spec"]["podMetricsEndpoints"][0]["port"] == port
    fixed = rendered(make(replicas=3))
    predictor = fixed["InferenceService"]["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (3, 3)
    annotations = fixed["InferenceService"]["metadata"]["annotations"]
    assert annotations["serving.kserve.io/autoscalerClass"] == "none"
    assert "HorizontalPodAutoscaler" not in fixed


@pytest.mark.parametrize("url", ["/models", "file:///models", "ftp://host/models"])
def test_kserve_needs_a_storage_uri(url: str) -> None:
    with pytest.raises(UsageError, match="not a storage URI KServe can download"):
        check_storage_uri(url)
    with pytest.raises(UsageError):
        render_kserve(make(model_repo=url))
