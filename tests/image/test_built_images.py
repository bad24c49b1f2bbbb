"""The standard images, built for real from freshly rendered contexts and run.

buildah builds (daemonless), podman runs, on a Debian 12 base made here with mmdebstrap
(it stands in for nvidia/cuda and ubuntu, which no registry here serves). Each image is
locked, rendered and built with torchrig's own commands, then `torchrig image test`
checks what it promises from outside; the serve image also answers a host client exactly
as the packed model does in process. Without buildah/podman/mmdebstrap (or root) these
tests skip with the reason; in CI they fail instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from doubles import until
from oci import BASE_IMAGE, Engines, prepare_engines, require_free_disk, wheelhouse_with
from torchrig.demo import build_demo_repository
from torchrig.image.container import Engineer, RunOptions
from torchrig.image.engine import find_engine

# building an image takes minutes (the CUDA one's wheels are gigabytes): past the suite's
# 300 s per test, each test here (and the build its fixture runs) has 40 minutes
pytestmark = [pytest.mark.images, pytest.mark.timeout(2400)]
# three builds, one worker each, at once (the storage takes concurrent builds; the engines
# are prepared once per run, `prepare_engines`): the serve image's tests share that image,
# so one worker runs them in order; the dev and CUDA images build beside it. One worker
# for all three made them the suite's critical path (890 of its 950 s on 2 cores).
SERVE_IMAGE = pytest.mark.xdist_group("images-serve")

CPU_TORCH = torch.__version__.split("+", 1)[0]  # the image's torch is the tests' own release
CUDA_TORCH = "2.14.1"
COMMON_CHECKS = {"user.non_root", "venv.read_only", "pins.constraints", "torch.build"}


@pytest.fixture(scope="module")
def engines() -> Engines:
    return prepare_engines()


def build_image(
    engines: Engines,
    workdir: Path,
    *,
    torch_version: str,
    cuda: str,
    flavour: str,
    wheelhouse: Path | None,
) -> str:
    """lock, render and build one image with torchrig's commands; its tag."""
    spec = ["--torch", torch_version, "--cuda", cuda, "--flavour", flavour, "--python", "3.11"]
    constraints = workdir / f"{flavour}-constraints.txt"
    locked = engines.torchrig("image", "lock", *spec, "-o", str(constraints))
    assert locked.returncode == 0, locked.stderr
    context = workdir / f"{flavour}-context"
    render = ["image", "render", *spec, "--python-source", "distro", "--base", BASE_IMAGE,
              "--constraints", str(constraints), "-o", str(context)]  # fmt: skip
    if wheelhouse is not None:
        render += ["--wheelhouse", str(wheelhouse)]
    rendered = engines.torchrig(*render)
    assert rendered.returncode == 0, rendered.stderr
    tagged = engines.torchrig("image", "tag", *spec, "--registry", "localhost")
    assert tagged.returncode == 0, tagged.stderr
    tag = tagged.stdout.strip()
    build = ["image", "build", str(context), "--tag", tag, "--engine", "buildah"]
    if wheelhouse is not None or cuda != "cpu":
        # torch is in the wheelhouse, or it is PyPI's own CUDA variant (pinned without a
        # local label): no torch index to reach, as with a plain PyPI mirror
        build += ["--build-arg", "TORCH_INDEX_URL="]
    built = engines.torchrig(*build, timeout_s=2400)
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    return tag


def image_test(engines: Engines, tag: str, *extra: str) -> tuple[int, dict[str, str], dict]:
    """`torchrig image test TAG --json`: exit code, check -> status, and the whole report."""
    proc = engines.torchrig("image", "test", tag, "--engine", "podman", "--json", *extra)
    assert proc.stdout, proc.stderr
    report = json.loads(proc.stdout)
    return proc.returncode, {c["check"]: c["status"] for c in report["checks"]}, report


def assert_all_pass(code: int, statuses: dict[str, str], report: dict, wanted: set[str]) -> None:
    failed = [c for c in report["checks"] if c["status"] != "pass"]
    assert not failed, json.dumps(failed, indent=1)
    assert wanted <= set(statuses), sorted(statuses)
    assert code == 0


@pytest.fixture(scope="module")
def serve_image(engines: Engines, tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_image(
        engines,
        tmp_path_factory.mktemp("serve"),
        torch_version=CPU_TORCH,
        cuda="cpu",
        flavour="serve",
        wheelhouse=wheelhouse_with(f"torch-{CPU_TORCH}+cpu-cp311-*.whl"),
    )


@SERVE_IMAGE
def test_the_cpu_serve_image_keeps_its_promises(engines: Engines, serve_image: str) -> None:
    assert serve_image == f"localhost/pytorch:{CPU_TORCH}-cpu-serve"
    code, statuses, report = image_test(engines, serve_image)
    assert_all_pass(code, statuses, report, COMMON_CHECKS | {
        "serve.doctor_gate", "serve.healthcheck_before_ready", "serve.infer",
        "serve.healthcheck_after_ready", "serve.pod_spec"})  # fmt: skip


@pytest.fixture
def runner(engines: Engines, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engineer]:
    for name in ("CONTAINERS_STORAGE_CONF", "CONTAINERS_CONF", "BUILDAH_ISOLATION"):
        monkeypatch.setenv(name, engines.env[name])
    engine = Engineer(find_engine("podman", purpose="run"))
    try:
        yield engine
    finally:
        engine.close()


@SERVE_IMAGE
def test_a_model_packed_on_the_host_answers_the_same_from_the_image(
    serve_image: str, runner: Engineer, tmp_path: Path
) -> None:
    """Pack on a laptop, serve from the image: a host client gets the in-process answer."""
    from torchrig.packaging import load_program, read_manifest

    repo = build_demo_repository(tmp_path / "models")
    repo.chmod(0o755)
    container = runner.start(serve_image, RunOptions(
        publish=(8000,), volumes=(f"{repo}:/models:ro",), shm_size="256m"))  # fmt: skip
    base = f"http://127.0.0.1:{runner.port(container, 8000)}"

    def ready() -> bool:
        try:
            return httpx.get(f"{base}/v2/health/ready", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    until(ready, lambda: runner.logs(container)[-2000:], timeout_s=180, interval_s=0.5)
    image = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    answer = httpx.post(f"{base}/v2/models/classifier/infer", json={"inputs": [{
        "name": "image", "datatype": "FP32", "shape": list(image.shape),
        "data": image.flatten().tolist()}]}, timeout=60)  # fmt: skip
    assert answer.status_code == 200, answer.text
    served = torch.tensor(answer.json()["outputs"][0]["data"]).reshape(3, 10)
    version = repo / "classifier" / "1"
    model = load_program(version, read_manifest(version))
    with torch.inference_mode():
        expected = model({"image": image})["logits"]
    torch.testing.assert_close(served, expected, rtol=1e-4, atol=1e-5)


@SERVE_IMAGE
def test_image_test_fails_an_image_that_breaks_the_promises(
    engines: Engines, serve_image: str, tmp_path: Path
) -> None:
    """The checks can fail: a server bound to loopback and a root user are both caught."""
    (tmp_path / "Containerfile").write_text(
        f"FROM {serve_image}\nENV TORCHRIG_SERVE_HOST=127.0.0.1\nUSER 0:0\n"
    )
    broken = "localhost/pytorch:broken-serve"
    engines.run("buildah", "bud", "--format", "docker", "--tag", broken, str(tmp_path))
    # listening on loopback, it never answers the host: 30 s stand for the 180 s default
    code, statuses, _ = image_test(engines, broken, "--ready-timeout-s", "30")
    assert code == 1
    assert statuses["user.non_root"] == "fail"
    assert statuses["venv.read_only"] == "fail"
    assert statuses["serve.infer"] == "fail"  # listening only inside the container
    assert statuses["pins.constraints"] == "pass"


@pytest.mark.xdist_group("images-dev")
def test_the_cpu_dev_image_keeps_its_promises(
    engines: Engines, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tag = build_image(
        engines,
        tmp_path_factory.mktemp("dev"),
        torch_version=CPU_TORCH,
        cuda="cpu",
        flavour="dev",
        wheelhouse=wheelhouse_with(f"torch-{CPU_TORCH}+cpu-cp311-*.whl"),
    )
    code, statuses, report = image_test(engines, tag)
    assert_all_pass(code, statuses, report, COMMON_CHECKS | {
        "dev.ssh_key (mounted file)", "dev.ssh_key (TORCHRIG_SSH_AUTHORIZED_KEYS)",
        "dev.ssh_environment", "dev.ssh_password_refused", "dev.ssh_root_refused",
        "dev.jupyter_token"})  # fmt: skip


@pytest.mark.xdist_group("images-cuda")
def test_the_cuda_runtime_image_keeps_its_promises(
    engines: Engines, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """torch's CUDA wheel (PyPI's default variant, pinned without a local label) with its
    nvidia-* libraries: it installs, its pins hold, and it reports its CUDA without a GPU."""
    require_free_disk(engines, 20)  # the builder's venv and the image's copy of it, cold
    tag = build_image(
        engines,
        tmp_path_factory.mktemp("cuda"),
        torch_version=CUDA_TORCH,
        cuda="13.0",
        flavour="runtime",
        wheelhouse=wheelhouse_with(f"torch-{CUDA_TORCH}-cp311-*.whl"),
    )
    assert tag == f"localhost/pytorch:{CUDA_TORCH}-cuda13.0-runtime"
    code, statuses, report = image_test(engines, tag)
    assert_all_pass(code, statuses, report, COMMON_CHECKS)
    code = "import torch; print(torch.version.cuda, torch.cuda.is_available())"
    probe = engines.run("podman", "run", "--rm", "--no-healthcheck", tag, "python", "-c", code)
    assert probe.split() == ["13.0", "False"]
    env = engines.run("podman", "image", "inspect", "--format", "{{json .Config.Env}}", tag)
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in env
