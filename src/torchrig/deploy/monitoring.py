"""`torchrig deploy monitoring`: alerting rules, a Grafana dashboard and the Prometheus
adapter's rules, shipped as package data over torchrig's metric names.

The files in `torchrig/deploy/data/` are the source: the rules file is what `promtool`
checks and unit-tests; the Kubernetes wrappers (a PrometheusRule for the Prometheus
Operator, a ConfigMap for Grafana's dashboard sidecar) are rendered around them.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import yaml

from torchrig.deploy.pod import APP, APP_LABEL, Manifest

RULES_FILE = "alerts.rules.yml"
DASHBOARD_FILE = "grafana-dashboard.json"
ADAPTER_FILE = "prometheus-adapter-values.yaml"
# asset name -> file written by `deploy monitoring -o DIR`
ASSETS = {
    "rules": RULES_FILE,
    "prometheusrule": "prometheusrule.yaml",
    "dashboard": DASHBOARD_FILE,
    "dashboard-configmap": "grafana-dashboard-configmap.yaml",
    "adapter": ADAPTER_FILE,
}


def data_text(name: str) -> str:
    """A file of `torchrig/deploy/data`, read on use (never at import)."""
    return (
        resources.files("torchrig.deploy")
        .joinpath("data")
        .joinpath(name)
        .read_text(encoding="utf-8")
    )


def alert_rules() -> dict[str, Any]:
    """The Prometheus rules file (`groups: [...]`) as data."""
    rules: dict[str, Any] = yaml.safe_load(data_text(RULES_FILE))
    return rules


def dashboard() -> dict[str, Any]:
    """The Grafana dashboard as data."""
    board: dict[str, Any] = json.loads(data_text(DASHBOARD_FILE))
    return board


def adapter_values() -> dict[str, Any]:
    """The Prometheus adapter's Helm values (its custom-metrics rules) as data."""
    values: dict[str, Any] = yaml.safe_load(data_text(ADAPTER_FILE))
    return values


def _metadata(name: str, namespace: str | None, **labels: str) -> Manifest:
    meta: Manifest = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta["labels"] = {APP_LABEL: APP, **labels}
    return meta


def prometheus_rule(namespace: str | None = None) -> Manifest:
    """The alerting rules as a Prometheus Operator `PrometheusRule`."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": _metadata("torchrig", namespace),
        "spec": {"groups": alert_rules()["groups"]},
    }


def dashboard_configmap(namespace: str | None = None) -> Manifest:
    """The dashboard in a ConfigMap that Grafana's sidecar (label grafana_dashboard) loads."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata("torchrig-dashboard", namespace, grafana_dashboard="1"),
        "data": {"torchrig.json": data_text(DASHBOARD_FILE)},
    }


def render_assets(namespace: str | None = None) -> dict[str, str]:
    """Every monitoring asset: asset name -> file content."""
    from torchrig.deploy.output import to_yaml

    return {
        "rules": data_text(RULES_FILE),
        "prometheusrule": to_yaml([prometheus_rule(namespace)]),
        "dashboard": data_text(DASHBOARD_FILE),
        "dashboard-configmap": to_yaml([dashboard_configmap(namespace)]),
        "adapter": data_text(ADAPTER_FILE),
    }
