"""Kubernetes and KServe manifests and monitoring assets for torchrig servers.

`DeploySpec.create(...)` validates what to deploy; `render_k8s` and `render_kserve`
turn it into manifests (plain dicts, dumped by `to_yaml`); `render_assets` gives the
alerting rules, Grafana dashboard and Prometheus adapter rules shipped in `data/`.
"""

from torchrig.deploy.k8s import render_k8s
from torchrig.deploy.kserve import render_kserve
from torchrig.deploy.monitoring import render_assets
from torchrig.deploy.output import manifest_files, to_yaml, write_files
from torchrig.deploy.spec import DeploySpec

__all__ = [
    "DeploySpec",
    "manifest_files",
    "render_assets",
    "render_k8s",
    "render_kserve",
    "to_yaml",
    "write_files",
]
