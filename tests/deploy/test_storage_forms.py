"""Every model storage form `deploy` renders: valid manifests (kubernetes-validate, strict),
and the rendered server container, run locally with its own command, env and mounts, gets
ready with the model -- from a directory standing in for a PVC, an NFS share, the image,
and from moto's S3 server with credentials from a Secret."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from local_pod import materialize, serving_pod
from torchrig.deploy import DeploySpec, render_k8s, render_kserve, to_yaml
from torchrig.errors import UsageError

Validate = Callable[[dict[str, Any]], None]
IMAGE = "ghcr.io/acme/pytorch:2.11.0-cuda12.8-serve"
BUCKET = "deploy-models"
TOKEN = "local-management-token"
README = Path(__file__).resolve().parents[2] / "README.md"


def make(**changes: Any) -> DeploySpec:
    return DeploySpec.create(name="ranker", image=IMAGE, **changes)


def rendered(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(to_yaml(docs)) if doc}


def pod_of(spec: DeploySpec) -> dict[str, Any]:
    docs = rendered(render_k8s(spec, token=TOKEN))
    return docs["Deployment"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def validate_all(spec: DeploySpec, validate: Validate, *, kserve: bool) -> None:
    for doc in rendered(render_k8s(spec)).values():
        validate(doc)
    if kserve:
        for doc in rendered(render_kserve(spec)).values():
            validate(doc)


def assert_ready_with_the_model(url: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get("/v2/models/ranker/ready").status_code == 200
        assert client.get("/v2/models/classifier/ready").status_code == 200


def run_locally(
    spec: DeploySpec,
    tmp_path: Path,
    *,
    stand_ins: dict[str, Path] | None = None,
    secrets: dict[str, dict[str, str]] | None = None,
    image_files: dict[str, Path] | None = None,
) -> None:
    """The rendered container as a local process, until it is ready with the model."""
    root = tmp_path / "pod"
    for path, source in (image_files or {}).items():  # what the image would hold
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source, target_is_directory=True)
    argv, env = materialize(
        pod_of(spec),
        root,
        stand_ins=stand_ins or {},
        secrets={"ranker-management-token": {"token": TOKEN}, **(secrets or {})},
    )
    with serving_pod(argv, env, tmp_path / "server.log") as url:
        assert_ready_with_the_model(url)


@pytest.fixture
def pvc_stand_in(tmp_path: Path, demo_repo: Path) -> Path:
    """A directory with the repository under ranking/, as on the PVC."""
    volume = tmp_path / "pvc"
    volume.mkdir()
    (volume / "ranking").symlink_to(demo_repo, target_is_directory=True)
    return volume


def test_a_pvc_is_mounted_read_only_and_served(
    validate_manifest: Validate, pvc_stand_in: Path, tmp_path: Path
) -> None:
    spec = make(model_volume="pvc:models-pvc:ranking")
    validate_all(spec, validate_manifest, kserve=True)
    pod = pod_of(spec)
    (server,) = pod["containers"]
    mount = next(m for m in server["volumeMounts"] if m["name"] == "models")
    assert mount == {
        "name": "models",
        "mountPath": "/models",
        "readOnly": True,
        "subPath": "ranking",
    }
    volume = next(v for v in pod["volumes"] if v["name"] == "models")
    assert volume["persistentVolumeClaim"] == {"claimName": "models-pvc", "readOnly": True}
    assert server["args"] == ["torchrig", "serve", "/models"]
    # KServe mounts the same claim itself, from its storage URI
    kserve = rendered(render_kserve(spec))
    model = kserve["InferenceService"]["spec"]["predictor"]["model"]
    assert model["storageUri"] == "pvc://models-pvc/ranking"
    assert all(v["name"] != "models" for v in kserve["ServingRuntime"]["spec"]["volumes"])
    run_locally(spec, tmp_path, stand_ins={"models-pvc": pvc_stand_in})


def test_pvc_url_is_the_volume_shorthand() -> None:
    """`--model-repo pvc://CLAIM/PATH` renders what `--model-volume pvc:CLAIM:PATH` does,
    never `torchrig serve pvc://...` (fsspec knows no pvc protocol)."""
    shorthand, volume = (
        make(model_repo="pvc://models-pvc/ranking"),
        make(model_volume="pvc:models-pvc:ranking"),
    )
    assert pod_of(shorthand) == pod_of(volume)
    assert pod_of(shorthand)["containers"][0]["args"][-1] == "/models"


def test_an_nfs_share_at_a_chosen_path(
    validate_manifest: Validate, demo_repo: Path, tmp_path: Path
) -> None:
    spec = make(model_repo="/data/models", model_volume="nfs:nfs.example.com:/exports/models")
    validate_all(spec, validate_manifest, kserve=False)
    with pytest.raises(UsageError, match="bind the NFS share to a PersistentVolumeClaim"):
        render_kserve(spec)
    (server,) = pod_of(spec)["containers"]
    assert server["args"][-1] == "/data/models"
    run_locally(spec, tmp_path, stand_ins={"nfs.example.com:/exports/models": demo_repo})


def test_a_path_in_the_image_only_when_asked(
    validate_manifest: Validate, demo_repo: Path, tmp_path: Path
) -> None:
    with pytest.raises(UsageError, match="nothing is mounted there"):
        make(model_repo="/opt/models")
    spec = make(model_repo="/opt/models", model_in_image=True)
    validate_all(spec, validate_manifest, kserve=False)
    pod = pod_of(spec)
    assert all(v["name"] != "models" for v in pod["volumes"])
    run_locally(spec, tmp_path, image_files={"/opt/models": demo_repo})


@pytest.fixture
def moto_s3(demo_repo: Path) -> Iterator[str]:
    """moto's S3 server on loopback with the demo repository under s3://deploy-models/repo;
    yields its endpoint URL. The test process's own env is left alone: the pod gets its
    credentials from the Secret stand-in. moto keeps its buckets in process-wide state,
    shared by every moto server of the test run: it is reset at the end."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=BUCKET)
    for path in sorted(demo_repo.rglob("*")):
        if path.is_file():
            key = f"repo/{path.relative_to(demo_repo).as_posix()}"
            client.upload_file(str(path), BUCKET, key)
    try:
        yield endpoint
    finally:
        httpx.post(f"{endpoint}/moto-api/reset", timeout=30).raise_for_status()
        server.stop()


def test_s3_with_credentials_from_a_secret(
    validate_manifest: Validate, moto_s3: str, tmp_path: Path
) -> None:
    spec = make(
        model_repo=f"s3://{BUCKET}/repo",
        env_from_secrets=("s3-credentials",),
        env=("AWS_DEFAULT_REGION=us-east-1",),
    )
    validate_all(spec, validate_manifest, kserve=True)
    assert spec.notes() == []  # credentials are given: nothing to warn about
    (server,) = pod_of(spec)["containers"]
    assert server["args"] == ["torchrig", "serve", f"s3://{BUCKET}/repo"]
    assert server["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    text = to_yaml(render_k8s(spec))
    assert "testing" not in text  # the credentials are in the Secret, never in the spec
    credentials = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL_S3": moto_s3,
    }
    run_locally(spec, tmp_path, secrets={"s3-credentials": credentials})


@pytest.mark.parametrize(
    ("repo", "annotation"),
    [
        ("s3://models/ranking", "eks.amazonaws.com/role-arn"),
        ("gs://models/ranking", "iam.gke.io/gcp-service-account"),
        ("az://models/ranking", "azure.workload.identity/client-id"),
    ],
)
def test_object_stores_with_the_pods_identity(
    validate_manifest: Validate, repo: str, annotation: str
) -> None:
    """IRSA, GKE and Azure Workload Identity all bind a Kubernetes ServiceAccount: the pod
    runs as it, and the API token stays unmounted (the webhooks project their own). The
    annotation named here goes on that ServiceAccount (README)."""
    labels = ("azure.workload.identity/use=true",) if repo.startswith("az") else ()
    spec = make(model_repo=repo, service_account="ranker-reader", labels=labels)
    validate_all(spec, validate_manifest, kserve=not repo.startswith("az"))
    pod = pod_of(spec)
    assert pod["serviceAccountName"] == "ranker-reader"
    assert pod["automountServiceAccountToken"] is False
    (server,) = pod["containers"]
    assert server["args"][-1] == repo
    env = {e["name"]: e["value"] for e in server["env"]}
    notes = spec.notes()
    if repo.startswith("az"):
        docs = rendered(render_k8s(spec))
        template = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
        assert template["azure.workload.identity/use"] == "true"
        assert env["AZURE_STORAGE_ANON"] == "false"
        (note,) = notes
        assert "'azure' extra" in note
    else:
        assert notes == []
        assert "AZURE_STORAGE_ANON" not in env
    # the ServiceAccount's annotation each cloud needs is documented with the example
    assert annotation in README.read_text(encoding="utf-8")
