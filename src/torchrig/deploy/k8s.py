"""`torchrig deploy k8s`: a Deployment, its Service, PodDisruptionBudget, autoscaler,
Prometheus Operator monitor and management-token Secret, as plain dicts.

The autoscaler scales on torchrig's own in-flight requests per pod (served to the HPA by
the Prometheus adapter's custom metrics API, see `deploy monitoring`), with CPU as a
second metric that still works when the adapter does not answer. That fallback is an
average CPU *value* per pod, sized to the server processes: one process is bounded by about
one core (its event loop holds the GIL), so a utilisation target of a 4-core request could
never be reached by a single-worker GPU server.
"""

from __future__ import annotations

import secrets

from torchrig.deploy.pod import (
    APP_LABEL,
    GRPC_PORT,
    GRPC_PORT_NAME,
    HTTP_PORT,
    PORT_NAME,
    STARTUP_BUDGET_S,
    TOKEN_KEY,
    Manifest,
    container,
    labels,
    metadata,
    node_selector,
    object_labels,
    placement,
    pod_annotations,
    pod_security,
    termination_grace_s,
    token_secret_name,
    tolerations,
    volumes,
)
from torchrig.deploy.spec import DeploySpec

AUTOSCALE_METRIC = "torchrig_inflight_requests"  # the adapter exposes it under this name
# scale out when the pods' server processes average 80 % of the one core each can use
CPU_FALLBACK_MILLICORES_PER_WORKER = 800
SCRAPE_INTERVAL = "15s"
SCRAPE_TIMEOUT = "10s"
MONITORS = ("servicemonitor", "podmonitor", "none")


def render_k8s(
    spec: DeploySpec, *, monitor: str = "servicemonitor", token: str | None = None
) -> list[Manifest]:
    """Every object of a plain-Kubernetes deployment, in the order to apply them.

    `monitor` picks the Prometheus Operator object (or "none" without the operator);
    `token` is the management token to put in the Secret (default: a fresh random one);
    with `spec.token_secret` the Secret exists already and is not rendered.
    """
    if monitor not in MONITORS:
        raise ValueError(f"monitor must be one of {MONITORS}, not {monitor!r}")
    docs: list[Manifest] = []
    if spec.token_secret is None:
        docs.append(token_secret(spec, token))
    docs += [service(spec), deployment(spec), disruption_budget(spec, labels(spec))]
    if spec.autoscaled:
        docs.append(autoscaler(spec, "Deployment", spec.name))
    if monitor == "servicemonitor":
        docs.append(service_monitor(spec))
    elif monitor == "podmonitor":
        docs.append(pod_monitor(spec, labels(spec), PORT_NAME))
    return docs


def token_secret(spec: DeploySpec, token: str | None = None) -> Manifest:
    """The Secret holding the bearer token of the server's model-control endpoints."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(spec, token_secret_name(spec)),
        "type": "Opaque",
        "stringData": {TOKEN_KEY: token or secrets.token_urlsafe(32)},
    }


def service(spec: DeploySpec) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(spec, spec.name),
        "spec": {
            "type": "ClusterIP",
            "selector": labels(spec),
            "ports": [
                {
                    "name": PORT_NAME,
                    "port": HTTP_PORT,
                    "targetPort": PORT_NAME,
                    "protocol": "TCP",
                    "appProtocol": "http",
                },
                {
                    "name": GRPC_PORT_NAME,
                    "port": GRPC_PORT,
                    "targetPort": GRPC_PORT_NAME,
                    "protocol": "TCP",
                    "appProtocol": "kubernetes.io/h2c",
                },
            ],
        },
    }


def deployment(spec: DeploySpec) -> Manifest:
    """The server pods: see `torchrig.deploy.pod` for what each setting prevents."""
    body: Manifest = {
        "revisionHistoryLimit": 5,
        # a rollout may wait for a GPU node and a long warm-up before it is called stuck
        "progressDeadlineSeconds": STARTUP_BUDGET_S + 300,
        "selector": {"matchLabels": labels(spec)},
        # never below the serving count during a rollout; one extra pod at a time
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        },
        "template": {
            "metadata": {"labels": object_labels(spec), "annotations": pod_annotations(spec)},
            "spec": {
                "automountServiceAccountToken": False,  # the server never calls the API
                **placement(spec),
                "enableServiceLinks": False,
                "terminationGracePeriodSeconds": termination_grace_s(spec),
                "securityContext": pod_security(),
                "nodeSelector": node_selector(spec),
                "tolerations": tolerations(),
                "topologySpreadConstraints": [
                    {
                        "maxSkew": 1,
                        "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": labels(spec)},
                    }
                ],
                "containers": [
                    container(
                        spec,
                        name="server",
                        repository=spec.model_repo,
                        port=HTTP_PORT,
                        port_name=PORT_NAME,
                    )
                ],
                "volumes": volumes(spec),
            },
        },
    }
    if spec.replicas is not None:  # with an autoscaler, `kubectl apply` must not reset it
        body = {"replicas": spec.replicas, **body}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(spec, spec.name),
        "spec": body,
    }


def disruption_budget(spec: DeploySpec, pod_labels: dict[str, str]) -> Manifest:
    """Node drains take one pod at a time; a pod that is not ready never blocks a drain."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(spec, spec.name),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": pod_labels},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def autoscaler(spec: DeploySpec, kind: str, target: str) -> Manifest:
    """An HPA on in-flight requests per pod (custom metric), with CPU as the fallback.

    The HPA takes the largest replica count its metrics propose; when the custom metric
    is unavailable it still scales up on CPU: 800m per server process on average, which a
    busy process reaches (a utilisation of the whole request would not be, see the module
    docstring). Scale-up is quick, scale-down slow: a new GPU pod costs minutes of warm-up.
    """
    cpu_target = f"{CPU_FALLBACK_MILLICORES_PER_WORKER * spec.workers}m"
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(spec, spec.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target},
            "minReplicas": spec.min_replicas,
            "maxReplicas": spec.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": AUTOSCALE_METRIC},
                        "target": {
                            "type": "AverageValue",
                            "averageValue": str(spec.target_inflight),
                        },
                    },
                },
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "AverageValue", "averageValue": cpu_target},
                    },
                },
            ],
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "selectPolicy": "Max",
                    "policies": [
                        {"type": "Pods", "value": 2, "periodSeconds": 60},
                        {"type": "Percent", "value": 100, "periodSeconds": 60},
                    ],
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": 600,
                    "selectPolicy": "Min",
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}],
                },
            },
        },
    }


def _endpoint(port_name: str) -> Manifest:
    return {
        "port": port_name,
        "path": "/metrics",
        "interval": SCRAPE_INTERVAL,
        "scrapeTimeout": SCRAPE_TIMEOUT,
    }


def service_monitor(spec: DeploySpec) -> Manifest:
    """Scrape through the Service; `job` comes from its app label, so it is "torchrig"."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata(spec, spec.name),
        "spec": {
            "jobLabel": APP_LABEL,
            "selector": {"matchLabels": labels(spec)},
            "endpoints": [_endpoint(PORT_NAME)],
        },
    }


def pod_monitor(spec: DeploySpec, pod_labels: dict[str, str], port_name: str) -> Manifest:
    """Scrape the pods directly; `job` comes from their app label, so it is "torchrig"."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": metadata(spec, spec.name),
        "spec": {
            "jobLabel": APP_LABEL,
            "selector": {"matchLabels": pod_labels},
            "podMetricsEndpoints": [_endpoint(port_name)],
        },
    }
