"""`torchrig deploy k8s | kserve | monitoring`: manifests and monitoring assets.

Every input is validated before anything is rendered or written; bad input is one
`Error: ...` line with exit code 2. Manifests go to stdout (one YAML stream) or, with
`-o DIR`, one file per object.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

TOKEN_NOTE = (
    "note: {file} holds a freshly generated management token: keep it out of version "
    "control, or pass --token-secret NAME to use a Secret you manage"
)


def _workload_options(func: F) -> F:
    """The options that describe one deployment, shared by `k8s` and `kserve`."""
    options = [
        click.option("--name", required=True,
                     help="Name of every object (DNS-1123 label, <= 53 characters)."),
        click.option("--image", required=True,
                     help="Serve image, pinned by tag or digest, e.g. "
                     "registry.example.com/platform/pytorch:2.9.1-cuda12.8-serve."),
        click.option("--model-repo", default=None,
                     help="Model repository as the pod reaches it: s3://, gs://, az://, "
                     "https:// (read by the server), pvc://CLAIM/PATH, or the path where "
                     "--model-volume is mounted [default with a volume: /models]."),
        click.option("--model-volume", default=None, metavar="pvc:CLAIM[:SUBPATH]",
                     help="Mount the repository read-only from a PVC (or nfs:SERVER:/PATH)."),
        click.option("--model-in-image", is_flag=True, default=False,
                     help="--model-repo is a path inside the image: mount nothing."),
        click.option("--gpus", type=int, default=1, show_default=True,
                     help="GPUs (or MIG slices) per pod (1 to 8)."),
        click.option("--gpu-resource", default=None,
                     help="GPU resource name, e.g. nvidia.com/mig-1g.10gb for a MIG slice "
                     "[default: nvidia.com/gpu]."),
        click.option("--gpu-product", multiple=True, metavar="PRODUCT",
                     help="Only nodes with this GPU (nvidia.com/gpu.product label), "
                     "e.g. NVIDIA-H100-80GB-HBM3 (repeatable: any of them)."),
        click.option("--workers", type=int, default=None,
                     help="Server processes per pod, the GPUs shared out between them; the "
                     "CPU request and /dev/shm follow [default: one per GPU]."),
        click.option("--service-account", default=None,
                     help="Pod identity (IRSA, GKE or Azure Workload Identity) for s3://, "
                     "gs://, az:// repositories."),
        click.option("--env", multiple=True, metavar="KEY=VALUE",
                     help="Container environment variable (repeatable; no credentials)."),
        click.option("--env-from-secret", multiple=True, metavar="SECRET",
                     help="Every key of this Secret as an environment variable, e.g. "
                     "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (repeatable)."),
        click.option("--image-pull-secret", multiple=True, metavar="SECRET",
                     help="Registry credentials for a private image (repeatable)."),
        click.option("--labels", multiple=True, metavar="KEY=VALUE",
                     help="Extra label on every object and pod (repeatable)."),
        click.option("--annotations", multiple=True, metavar="KEY=VALUE",
                     help="Extra annotation on every object and pod (repeatable)."),
        click.option("--priority-class", default=None,
                     help="PriorityClass of the pods."),
        click.option("--memory", default=None,
                     help="Memory request and limit per pod [default: 16Gi per GPU]."),
        click.option("--cpu", default=None, help="CPU request per pod (no limit) [default: 4]."),
        click.option("--replicas", type=int, default=None,
                     help="A fixed number of pods, no autoscaler."),
        click.option("--min-replicas", type=int, default=None,
                     help="Autoscaler minimum [default: 2]."),
        click.option("--max-replicas", type=int, default=None,
                     help="Autoscaler maximum [default: 8]."),
        click.option("--target-inflight", type=int, default=None,
                     help="In-flight requests per pod the autoscaler aims at [default: 32]."),
        click.option("--drain-timeout-s", type=float, default=None,
                     help="Server drain on SIGTERM; the grace period exceeds it [default: 30]."),
        click.option("--namespace", default=None,
                     help="Namespace of every object (default: kubectl's)."),
        click.option("--node-selector", multiple=True, metavar="KEY=VALUE",
                     help="Node labels of the GPU pool (repeatable) "
                     "[default: nvidia.com/gpu.present=true]."),
        click.option("--token-secret", default=None,
                     help="Existing Secret (key 'token') with the management token; "
                     "default: render one with a fresh token."),
        click.option("-o", "--output", type=click.Path(path_type=Path, file_okay=False),
                     default=None, help="Write one file per object here (default: stdout)."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def _spec(options: dict[str, Any]) -> Any:
    from torchrig.deploy import DeploySpec

    return DeploySpec.create(
        name=options["name"],
        image=options["image"],
        model_repo=options["model_repo"],
        model_volume=options["model_volume"],
        model_in_image=options["model_in_image"],
        gpus=options["gpus"],
        gpu_resource=options["gpu_resource"],
        gpu_products=tuple(options["gpu_product"]),
        workers=options["workers"],
        service_account=options["service_account"],
        env=tuple(options["env"]),
        env_from_secrets=tuple(options["env_from_secret"]),
        image_pull_secrets=tuple(options["image_pull_secret"]),
        labels=tuple(options["labels"]),
        annotations=tuple(options["annotations"]),
        priority_class=options["priority_class"],
        memory=options["memory"],
        cpu=options["cpu"],
        namespace=options["namespace"],
        replicas=options["replicas"],
        min_replicas=options["min_replicas"],
        max_replicas=options["max_replicas"],
        target_inflight=options["target_inflight"],
        drain_timeout_s=options["drain_timeout_s"],
        node_selector=tuple(options["node_selector"]),
        token_secret=options["token_secret"],
    )


def _emit(docs: list[dict[str, Any]], output: Path | None, notes: list[str]) -> None:
    from torchrig.deploy import manifest_files, to_yaml, write_files

    if any(doc["kind"] == "Secret" for doc in docs):
        notes.append(TOKEN_NOTE.format(file="secret.yaml" if output else "the Secret"))
    if output is None:
        sys.stdout.write(to_yaml(docs))
    else:
        for path in write_files(output, manifest_files(docs)):
            click.echo(f"wrote {path}")
    for note in notes:
        click.echo(note, err=True)


@click.group("deploy")
def deploy() -> None:
    """Render Kubernetes and KServe manifests and monitoring assets for `torchrig serve`."""


@deploy.command("k8s")
@_workload_options
@click.option("--monitor", type=click.Choice(["servicemonitor", "podmonitor", "none"]),
              default="servicemonitor", show_default=True,
              help="Prometheus Operator object that scrapes the pods.")  # fmt: skip
def k8s_command(monitor: str, output: Path | None, **options: Any) -> None:
    """Deployment, Service, PodDisruptionBudget, HorizontalPodAutoscaler, monitor, Secret.

    GPU limits, /dev/shm in memory sized to the GPUs, a startup probe that lets the
    model warm up, a drain longer than the server's, a non-root read-only container.
    """
    from torchrig.deploy import render_k8s

    spec = _spec(options)
    _emit(render_k8s(spec, monitor=monitor), output, spec.notes())


@deploy.command("kserve")
@_workload_options
@click.option("--monitor", type=click.Choice(["podmonitor", "none"]), default="podmonitor",
              show_default=True,
              help="Prometheus Operator object that scrapes the pods.")  # fmt: skip
def kserve_command(monitor: str, output: Path | None, **options: Any) -> None:
    """KServe ServingRuntime (protocol v2) and InferenceService, with PDB, HPA, PodMonitor.

    KServe copies --model-repo to /mnt/models; the InferenceService runs in raw deployment
    mode and the rendered HPA scales it on in-flight requests per pod.
    """
    from torchrig.deploy import render_kserve
    from torchrig.deploy.kserve import check_storage_uri

    spec = _spec(options)
    check_storage_uri(spec.storage.kserve_uri())
    _emit(render_kserve(spec, monitor=monitor), output, spec.notes())


@deploy.command("monitoring")
@click.option("--namespace", default=None,
              help="Namespace of the PrometheusRule and dashboard ConfigMap.")  # fmt: skip
@click.option(
    "--asset",
    type=click.Choice(["rules", "prometheusrule", "dashboard", "dashboard-configmap", "adapter"]),
    default=None,
    help="Print this one asset on stdout [default without -o: rules].",
)
@click.option("-o", "--output", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Write every asset here.")  # fmt: skip
def monitoring_command(namespace: str | None, asset: str | None, output: Path | None) -> None:
    """Prometheus alerting rules, Grafana dashboard, Prometheus adapter rules.

    Files: alerts.rules.yml (plain Prometheus rules), prometheusrule.yaml (the same for
    the Prometheus Operator), grafana-dashboard.json, grafana-dashboard-configmap.yaml
    (for Grafana's sidecar), prometheus-adapter-values.yaml (Helm values).
    """
    from torchrig.deploy import render_assets, write_files
    from torchrig.deploy.monitoring import ASSETS
    from torchrig.deploy.spec import check_namespace
    from torchrig.errors import UsageError

    if namespace is not None:
        check_namespace(namespace)
    if asset is not None and output is not None:
        raise UsageError("give --asset (print one on stdout) or -o DIR (write all), not both")
    assets = render_assets(namespace)
    if output is None:
        sys.stdout.write(assets[asset or "rules"])
        return
    for path in write_files(output, {ASSETS[key]: text for key, text in assets.items()}):
        click.echo(f"wrote {path}")
