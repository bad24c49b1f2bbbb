"""`torchrig deploy ...` as a user runs it: a real process, stdout, files, exit codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from cli_runs import torchrig as run_torchrig

IMAGE = "ghcr.io/acme/pytorch:2.11.0-cuda12.8-serve"
WORKLOAD = ["--name", "ranker", "--image", IMAGE, "--model-repo", "s3://models/ranking"]


def torchrig(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_torchrig(*args, cwd=cwd, timeout_s=60)


def test_k8s_to_stdout() -> None:
    proc = torchrig("deploy", "k8s", *WORKLOAD, "--namespace", "serving")
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert [d["kind"] for d in docs] == [
        "Secret",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
    ]
    assert {d["metadata"]["namespace"] for d in docs} == {"serving"}
    assert "freshly generated management token" in proc.stderr


def test_k8s_and_kserve_into_a_directory(tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    proc = torchrig("deploy", "k8s", *WORKLOAD, "--gpus", "2", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        f"{k}.yaml"
        for k in (
            "secret",
            "service",
            "deployment",
            "poddisruptionbudget",
            "horizontalpodautoscaler",
            "servicemonitor",
            "kustomization",
        )
    )
    # teams overlay the output with kustomize: its kustomization lists every other file
    kustomization = yaml.safe_load((out / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["resources"] == [n for n in names if n != "kustomization.yaml"]
    assert sorted(proc.stdout.splitlines()) == sorted(f"wrote {out / n}" for n in names)
    deployment = yaml.safe_load((out / "deployment.yaml").read_text())
    limits = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 2
    kserve = tmp_path / "kserve"
    proc = torchrig("deploy", "kserve", *WORKLOAD, "--replicas", "2", "-o", str(kserve))
    assert proc.returncode == 0, proc.stderr
    assert (kserve / "servingruntime.yaml").exists()
    assert (kserve / "inferenceservice.yaml").exists()
    assert not (kserve / "horizontalpodautoscaler.yaml").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "Ranker"], "--name 'Ranker' is not a valid name"),
        (["--gpus", "0"], "--gpus 0: a torchrig server needs at least 1 GPU"),
        (["--gpus", "16"], "--gpus 16 is more than a node has"),
        (["--memory", "-1Gi"], "--memory '-1Gi' must be positive"),
        (["--image", "ghcr.io/acme/pytorch"], "has no tag or digest"),
        (["--replicas", "2", "--min-replicas", "1"], "not both"),
    ],
)
def test_bad_input_is_one_error_line_and_nothing_written(
    tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "never"
    proc = torchrig("deploy", "k8s", *WORKLOAD, *args, "-o", str(out))
    assert proc.returncode == 2
    assert proc.stderr.startswith("Error: ")
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stdout == ""
    assert not out.exists()


def test_kserve_refuses_a_path_repository(tmp_path: Path) -> None:
    args = ["--name", "ranker", "--image", IMAGE, "--model-repo", "/models", "--model-in-image"]
    proc = torchrig("deploy", "kserve", *args, "-o", str(tmp_path / "never"))
    assert proc.returncode == 2
    assert "KServe needs a storage URI" in proc.stderr
    assert not (tmp_path / "never").exists()
    hdfs = ["--name", "ranker", "--image", IMAGE, "--model-repo", "hdfs://nn/models"]
    proc = torchrig("deploy", "kserve", *hdfs)
    assert proc.returncode == 2
    assert "the server cannot read hdfs://" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model-repo", "/models"], "nothing is mounted there"),
        (["--model-repo", "ftp://x/y"], "cannot read ftp://"),
        (["--model-volume", "pvc:Models"], "not a PersistentVolumeClaim name"),
        (["--model-volume", "hostPath:/data"], "give pvc:CLAIM[:SUBPATH] or nfs:SERVER:/PATH"),
        (["--model-volume", "pvc:m:../up"], "must be relative and stay inside it"),
        (["--model-repo", "/tmp/m", "--model-volume", "pvc:m"], "a path the pod needs"),
        (["--model-repo", "pvc://m/r", "--model-volume", "pvc:m"], "give the PVC once"),
        (["--model-repo", "s3://b/r", "--model-volume", "pvc:m"], "drop --model-volume"),
        (["--env", "AWS_SECRET_ACCESS_KEY=x"], "--env-from-secret NAME"),
        (["--env", "1X=y"], "not KEY=VALUE"),
        (["--env", "TORCHRIG_SERVE_DRAIN_TIMEOUT_S=5"], "use --drain-timeout-s"),
        (["--env-from-secret", "S3_Creds"], "not a valid object name"),
        (["--gpu-resource", "mig-1g.10gb"], "give nvidia.com/mig-1g.10gb"),
        (["--gpu-resource", "amd.com/gpu"], "not a GPU resource torchrig knows"),
        (["--gpu-product", "H100 80GB"], "not a label value"),
        (["--labels", "app.kubernetes.io/name=x"], "set by torchrig"),
        (["--workers", "0"], "--workers 0 must lie in"),
    ],
)
def test_storage_and_pod_options_refused_with_the_fix(args: list[str], message: str) -> None:
    base = ["--name", "ranker", "--image", IMAGE]
    if "--model-repo" not in args and "--model-volume" not in args:
        base += ["--model-repo", "s3://models/ranking"]
    proc = torchrig("deploy", "k8s", *base, *args)
    assert proc.returncode == 2, proc.stdout
    assert proc.stderr.startswith("Error: ")
    assert message in proc.stderr
    assert proc.stdout == ""


def test_monitoring_assets(tmp_path: Path) -> None:
    proc = torchrig("deploy", "monitoring", "--namespace", "monitoring", "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "alerts.rules.yml",
        "grafana-dashboard-configmap.yaml",
        "grafana-dashboard.json",
        "prometheus-adapter-values.yaml",
        "prometheusrule.yaml",
    ]
    rule = yaml.safe_load((tmp_path / "prometheusrule.yaml").read_text())
    assert rule["metadata"]["namespace"] == "monitoring"
    rules = yaml.safe_load((tmp_path / "alerts.rules.yml").read_text())
    assert rule["spec"]["groups"] == rules["groups"]
    configmap = yaml.safe_load((tmp_path / "grafana-dashboard-configmap.yaml").read_text())
    assert json.loads(configmap["data"]["torchrig.json"]) == json.loads(
        (tmp_path / "grafana-dashboard.json").read_text()
    )
    dashboard = torchrig("deploy", "monitoring", "--asset", "dashboard")
    assert json.loads(dashboard.stdout)["uid"] == "torchrig-serving"
    plain = torchrig("deploy", "monitoring")
    assert yaml.safe_load(plain.stdout) == rules
    both = torchrig("deploy", "monitoring", "--asset", "rules", "-o", str(tmp_path / "x"))
    assert both.returncode == 2
    assert "not both" in both.stderr


def test_help_lists_deploy() -> None:
    proc = torchrig("--help")
    assert "deploy" in proc.stdout
    sub = torchrig("deploy", "--help")
    assert {"k8s", "kserve", "monitoring"} <= set(sub.stdout.split())
