"""Validators for rendered manifests, the Prometheus tools, and a real demo server."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from referencing import Registry, Resource

from serving import running
from system_tools import require_tool
from torchrig.demo import build_demo_repository
from torchrig.settings import ServeSettings

SCHEMAS = Path(__file__).parent / "schemas"
# the oldest Kubernetes the manifests support, and the newest kubernetes-validate knows
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# custom resources: (apiVersion, kind) -> a schema derived from the project's published CRD
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.json",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "servingruntime.json",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice.json",
}
INSTALL_PROMETHEUS = (
    "the monitoring tests need Debian's prometheus package "
    "(apt-get install -y --no-install-recommends prometheus)"
)

# resource quantities as the Kubernetes API server parses them (the pattern apimachinery
# publishes in generated CRD schemas); kubernetes-validate's Quantity has no pattern
QUANTITY = re.compile(
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
QUANTITY_KEYS = ("requests", "limits", "sizeLimit", "averageValue")

Validate = Callable[[dict[str, Any]], None]


def _check_quantities(value: Any, path: str = "") -> None:
    """Every resource quantity (requests, limits, sizeLimit, averageValue) parses."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_quantities(item, f"{path}[{index}]")
        return
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        where = f"{path}.{key}"
        quantities = item.values() if key in ("requests", "limits") else [item]
        if key in QUANTITY_KEYS:
            for quantity in quantities:
                if not QUANTITY.match(str(quantity)):
                    raise jsonschema.ValidationError(f"{where}: {quantity!r} is not a quantity")
        else:
            _check_quantities(item, where)


def _kubernetes_registry() -> Registry:
    """kubernetes-validate's strict definitions of the newest version, for CRD schemas
    that embed core types (a ServingRuntime's containers, say)."""
    version = kubernetes_validate.latest_version()
    path = (
        resources.files("kubernetes_validate")
        / "kubernetes-json-schema"
        / f"v{version}-local-strict"
        / "_definitions.json"
    )
    definitions = json.loads(path.read_text(encoding="utf-8"))
    return Resource.from_contents(definitions) @ Registry()


@pytest.fixture(scope="session")
def validate_manifest() -> Validate:
    """Validate one object: core kinds with kubernetes-validate (strict, every version in
    K8S_VERSIONS), custom resources against their derived CRD schemas, and every resource quantity;
    raise jsonschema.ValidationError on any error."""
    registry = _kubernetes_registry()
    validators = {
        key: jsonschema.Draft202012Validator(
            json.loads((SCHEMAS / name).read_text(encoding="utf-8")), registry=registry
        )
        for key, name in CRD_SCHEMAS.items()
    }

    def validate(doc: dict[str, Any]) -> None:
        _check_quantities(doc)
        key = (doc["apiVersion"], doc["kind"])
        if key in validators:
            validators[key].validate(doc)
            return
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)

    return validate


def _tool(name: str) -> str:
    return require_tool(name, INSTALL_PROMETHEUS)


@pytest.fixture(scope="session")
def promtool() -> str:
    return _tool("promtool")


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    return _tool("prometheus")


@pytest.fixture(scope="session")
def demo_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deploy-demo") / "models"
    build_demo_repository(root)
    return root


@pytest.fixture(scope="module")
def demo_server(demo_repo: Path) -> Iterator[str]:
    """The real server (`torchrig serve` in a thread) over the demo repository: its URL."""
    with running(demo_repo, ServeSettings(port=0, log_format="text")) as (url, _state):
        yield url
