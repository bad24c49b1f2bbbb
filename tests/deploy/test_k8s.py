"""`deploy k8s` manifests: valid against the Kubernetes schemas, and right where it matters."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from torchrig.deploy import DeploySpec, render_k8s, to_yaml
from torchrig.deploy.monitoring import adapter_values, alert_rules
from torchrig.deploy.pod import PRESTOP_SLEEP_S
from torchrig.deploy.spec import parse_quantity
from torchrig.settings import load_settings

Validate = Callable[[dict[str, Any]], None]
IMAGE = "ghcr.io/acme/pytorch:2.11.0-cuda12.8-serve"


def make(**changes: Any) -> DeploySpec:
    return DeploySpec.create(
        **{"name": "ranker", "image": IMAGE, "model_repo": "s3://models/ranking", **changes}
    )


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in docs}


def rendered(spec: DeploySpec, **options: Any) -> list[dict[str, Any]]:
    """What `deploy k8s` prints, read back from its YAML."""
    return [doc for doc in yaml.safe_load_all(to_yaml(render_k8s(spec, **options))) if doc]


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return by_kind(docs)["Deployment"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def server(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = pod_spec(docs)["containers"]
    return container  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("changes", "monitor"),
    [
        ({}, "servicemonitor"),
        ({"gpus": 8, "namespace": "serving", "token_secret": "ops-token"}, "podmonitor"),
        ({"replicas": 3, "memory": "40Gi", "cpu": "1500m", "drain_timeout_s": 12.5}, "none"),
    ],
)
def test_every_object_validates(
    validate_manifest: Validate, changes: dict[str, Any], monitor: str
) -> None:
    docs = rendered(make(**changes), monitor=monitor)
    for doc in docs:
        validate_manifest(doc)
    assert len(docs) >= 4


def test_the_validators_can_fail(validate_manifest: Validate) -> None:
    docs = by_kind(rendered(make()))
    typo = copy.deepcopy(docs["Deployment"])
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_manifest(typo)
    bad_quantity = copy.deepcopy(docs["Deployment"])
    bad_quantity["spec"]["template"]["spec"]["volumes"][0]["emptyDir"]["sizeLimit"] = "2 GB"
    with pytest.raises(jsonschema.ValidationError, match="is not a quantity"):
        validate_manifest(bad_quantity)
    monitor = copy.deepcopy(docs["ServiceMonitor"])
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
    with pytest.raises(jsonschema.ValidationError):
        validate_manifest(monitor)


def test_objects_and_order() -> None:
    kinds = [doc["kind"] for doc in rendered(make())]
    assert kinds == [
        "Secret",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
    ]
    fixed = [doc["kind"] for doc in rendered(make(replicas=2, token_secret="t"), monitor="none")]
    assert fixed == ["Service", "Deployment", "PodDisruptionBudget"]


def test_gpus_memory_and_shm() -> None:
    docs = rendered(make(gpus=4, memory="200Gi"))
    resources = server(docs)["resources"]
    assert resources["limits"] == {"memory": "200Gi", "nvidia.com/gpu": 4}
    # one worker per GPU by default (the server gives each its own GPU): 2 cores each
    assert resources["requests"] == {"cpu": "8", "memory": "200Gi", "nvidia.com/gpu": 4}
    env = {e["name"]: e["value"] for e in server(docs)["env"]}
    assert env["TORCHRIG_SERVE_WORKERS"] == "4"
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in server(docs)["volumeMounts"]}
    shm = volumes[mounts["/dev/shm"]]["emptyDir"]
    assert shm == {"medium": "Memory", "sizeLimit": "8Gi"}
    one_gpu = {v["name"]: v for v in pod_spec(rendered(make()))["volumes"]}
    assert one_gpu["dshm"]["emptyDir"]["sizeLimit"] == "2Gi"


def test_scheduling_onto_the_gpu_pool() -> None:
    pod = pod_spec(rendered(make()))
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    custom = pod_spec(rendered(make(node_selector=("pool=a100", "zone=eu-1a"))))
    assert custom["nodeSelector"] == {"pool": "a100", "zone": "eu-1a"}


def test_probes_let_the_model_warm_up() -> None:
    container = server(rendered(make()))
    port_names = {p["name"] for p in container["ports"]}
    startup, ready, live = (
        container[k] for k in ("startupProbe", "readinessProbe", "livenessProbe")
    )
    assert startup["httpGet"]["path"] == "/v2/health/ready"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # 10 min of warm-up
    assert ready["httpGet"]["path"] == "/v2/health/ready"
    assert live["httpGet"]["path"] == "/v2/health/live"
    # liveness only starts after the startup probe passed, and tolerates a slow scrape
    assert live["failureThreshold"] * live["periodSeconds"] >= 30
    for probe in (startup, ready, live):
        assert probe["httpGet"]["port"] in port_names
        assert probe["timeoutSeconds"] < probe["periodSeconds"]


@pytest.mark.parametrize("drain", [30.0, 45.0, 299.5])
def test_grace_period_outlasts_prestop_and_drain(drain: float) -> None:
    docs = rendered(make(drain_timeout_s=drain))
    container = server(docs)
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(PRESTOP_SLEEP_S)]
    grace = pod_spec(docs)["terminationGracePeriodSeconds"]
    assert grace > PRESTOP_SLEEP_S + math.ceil(drain)
    env = {e["name"]: e["value"] for e in container["env"]}
    assert float(env["TORCHRIG_SERVE_DRAIN_TIMEOUT_S"]) == drain


def test_non_root_read_only_no_capabilities() -> None:
    docs = rendered(make())
    pod, container = pod_spec(docs), server(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the serve image's user
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    # with a read-only root, everything the server and torch write is a volume
    env = {e["name"]: e["value"] for e in container["env"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"] for v in pod["volumes"]}
    assert {m["name"] for m in mounts.values()} <= volumes
    for writable in ("/tmp", env["XDG_CACHE_HOME"]):
        assert not mounts[writable].get("readOnly", False)
    for cache in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        assert env[cache].startswith(env["XDG_CACHE_HOME"] + "/")


def test_the_server_reads_its_settings_from_the_env() -> None:
    """The TORCHRIG_SERVE_* variables are real settings: torchrig's loader takes them."""
    container = server(rendered(make(drain_timeout_s=42.0)))
    env = {e["name"]: e["value"] for e in container["env"]}
    serve = load_settings(environ=env).serve
    assert (serve.host, serve.port, serve.log_format) == ("0.0.0.0", 8000, "json")
    assert serve.drain_timeout_s == 42.0
    assert serve.require_gpu is True
    assert serve.management_token_file == "/var/run/secrets/torchrig/token"
    assert container["args"] == ["torchrig", "serve", "s3://models/ranking"]
    assert container["ports"] == [
        {"name": "http", "containerPort": 8000, "protocol": "TCP"},
        {"name": "grpc", "containerPort": 8001, "protocol": "TCP"},
    ]


def test_management_token_secret_is_mounted_as_a_file() -> None:
    docs = by_kind(rendered(make()))
    token = docs["Secret"]["stringData"]["token"]
    assert len(token) >= 40
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if "secret" in v)
    assert volume["secret"]["secretName"] == docs["Secret"]["metadata"]["name"]
    (container,) = pod["containers"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    env = {e["name"]: e["value"] for e in container["env"]}
    key = volume["secret"]["items"][0]["path"]
    assert env["TORCHRIG_SERVE_MANAGEMENT_TOKEN_FILE"] == f"{mount['mountPath']}/{key}"
    assert mount["readOnly"] is True
    assert by_kind(rendered(make()))["Secret"]["stringData"]["token"] != token  # fresh each time
    given = by_kind(render_k8s(make(), token="s3cr3t-token"))["Secret"]["stringData"]
    assert given == {"token": "s3cr3t-token"}
    existing = pod_spec(rendered(make(token_secret="ops-token")))
    assert next(v for v in existing["volumes"] if "secret" in v)["secret"]["secretName"] == (
        "ops-token"
    )


def test_selectors_match_the_pods() -> None:
    docs = by_kind(rendered(make()))
    pod_labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]

    def selects(match: dict[str, str]) -> bool:
        return bool(match) and all(pod_labels.get(k) == v for k, v in match.items())

    assert selects(docs["Deployment"]["spec"]["selector"]["matchLabels"])
    assert selects(docs["Service"]["spec"]["selector"])
    assert selects(docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"])
    assert docs["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    port = docs["Service"]["spec"]["ports"][0]
    assert port["targetPort"] == server(list(docs.values()))["ports"][0]["name"]
    monitor = docs["ServiceMonitor"]["spec"]
    service_labels = docs["Service"]["metadata"]["labels"]
    assert all(service_labels[k] == v for k, v in monitor["selector"]["matchLabels"].items())
    assert monitor["endpoints"][0]["port"] == port["name"]
    assert monitor["endpoints"][0]["path"] == "/metrics"


def test_the_scrape_job_is_the_one_the_alerts_select() -> None:
    docs = by_kind(rendered(make()))
    job_label = docs["ServiceMonitor"]["spec"]["jobLabel"]
    job = docs["Service"]["metadata"]["labels"][job_label]
    pod_docs = by_kind(rendered(make(), monitor="podmonitor"))
    pod_labels = pod_docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert pod_labels[pod_docs["PodMonitor"]["spec"]["jobLabel"]] == job
    for group in alert_rules()["groups"]:
        for rule in group["rules"]:
            assert f'job="{job}"' in rule["expr"], rule["alert"]


def test_autoscaler_on_inflight_requests_with_cpu_fallback() -> None:
    docs = by_kind(rendered(make(min_replicas=3, max_replicas=12, target_inflight=24)))
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "ranker",
    }
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12)
    pods, cpu = hpa["metrics"]
    assert pods["type"] == "Pods"
    assert pods["pods"]["target"] == {"type": "AverageValue", "averageValue": "24"}
    served = {rule["name"]["as"] for rule in adapter_values()["rules"]["custom"]}
    assert pods["pods"]["metric"]["name"] in served  # the Prometheus adapter provides it
    assert cpu["resource"]["name"] == "cpu"
    # one server process uses about one core at most (its event loop holds the GIL): the
    # fallback is a value per process it can reach, not a share of the 4-core request
    assert cpu["resource"]["target"] == {"type": "AverageValue", "averageValue": "800m"}
    workers = by_kind(rendered(make(workers=4)))
    target = workers["HorizontalPodAutoscaler"]["spec"]["metrics"][1]["resource"]["target"]
    assert target["averageValue"] == "3200m"
    requested = server(list(workers.values()))["resources"]["requests"]["cpu"]
    assert parse_quantity(target["averageValue"], what="t") < parse_quantity(requested, what="r")
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    # the autoscaler owns the replica count: `kubectl apply` must not reset it
    assert "replicas" not in docs["Deployment"]["spec"]
    fixed = by_kind(rendered(make(replicas=3)))
    assert fixed["Deployment"]["spec"]["replicas"] == 3
    assert "HorizontalPodAutoscaler" not in fixed


def test_namespace_on_every_object() -> None:
    docs = rendered(make(namespace="serving"))
    assert {doc["metadata"].get("namespace") for doc in docs} == {"serving"}
    assert {doc["metadata"].get("namespace") for doc in rendered(make())} == {None}


def test_identity_registry_and_gpu_placement(validate_manifest: Validate) -> None:
    spec = make(
        service_account="ranker-reader",
        image_pull_secrets=("registry-credentials",),
        priority_class="serving-high",
        labels=("team=ranking",),
        annotations=("owner=ml-platform@example.com",),
        gpu_products=("NVIDIA-H100-80GB-HBM3", "NVIDIA-H200"),
        gpu_resource="nvidia.com/mig-3g.40gb",
        env=("AWS_REGION=eu-west-1", "TORCHRIG_SERVE_LOG_FORMAT=text"),
        env_from_secrets=("s3-credentials",),
    )
    docs = rendered(spec)
    for doc in docs:
        validate_manifest(doc)
        assert doc["metadata"]["labels"]["team"] == "ranking"
        assert doc["metadata"]["annotations"]["owner"] == "ml-platform@example.com"
    template = by_kind(docs)["Deployment"]["spec"]["template"]
    assert template["metadata"]["labels"]["team"] == "ranking"
    assert by_kind(docs)["Deployment"]["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "torchrig",
        "app.kubernetes.io/instance": "ranker",
    }
    pod = pod_spec(docs)
    assert pod["serviceAccountName"] == "ranker-reader"
    assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert pod["priorityClassName"] == "serving-high"
    (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert term["matchExpressions"] == [
        {
            "key": "nvidia.com/gpu.product",
            "operator": "In",
            "values": ["NVIDIA-H100-80GB-HBM3", "NVIDIA-H200"],
        }
    ]
    container = server(docs)
    assert container["resources"]["limits"] == {"memory": "80Gi", "nvidia.com/mig-3g.40gb": 1}
    env = [(e["name"], e["value"]) for e in container["env"]]
    assert ("AWS_REGION", "eu-west-1") in env
    # a user value replaces torchrig's, once: no duplicate names
    assert ("TORCHRIG_SERVE_LOG_FORMAT", "text") in env
    assert len({name for name, _ in env}) == len(env)
    assert container["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    service_ports = {p["name"]: p for p in by_kind(docs)["Service"]["spec"]["ports"]}
    assert service_ports["grpc"]["port"] == 8001
    assert {p["name"] for p in container["ports"]} == {"http", "grpc"}
