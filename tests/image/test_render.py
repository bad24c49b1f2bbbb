"""Render every flavour of every valid matrix image; lint them; check what the images promise."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from torchrig.errors import UsageError
from torchrig.image.matrix import image_matrix
from torchrig.image.render import IGNORED_HADOLINT_RULES, RenderedContext, render_context
from torchrig.image.spec import ImageSpec, resolve_spec

Fake = Callable[[ImageSpec], str]
ROWS = image_matrix()


def _spec(torch: str, cuda: str, flavour: str, **kw: object) -> ImageSpec:
    return resolve_spec(torch=torch, cuda=cuda, flavour=flavour, allow_experimental=True, **kw)  # type: ignore[arg-type]


def _render(spec: ImageSpec, fake: Fake) -> RenderedContext:
    return render_context(spec, fake(spec), created="2026-01-01T00:00:00Z")


def test_matrix_covers_every_release_variant_and_flavour() -> None:
    assert len(ROWS) == 3 * len({(r.torch, r.cuda) for r in ROWS})
    assert {r.release for r in ROWS} >= {"2.9", "2.10", "2.11", "2.12", "2.13", "2.14"}
    assert all(
        r.needs_flag == ("--allow-experimental" if r.status == "experimental" else None)
        for r in ROWS
    )


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r.torch}-cu{r.cuda}-{r.flavour}")
def test_every_matrix_image_renders(row: object, fake_constraints: Fake) -> None:
    spec = _spec(row.torch, row.cuda, row.flavour)  # type: ignore[attr-defined]
    files = _render(spec, fake_constraints).files
    dockerfile = files["Dockerfile"]
    assert "@" not in re.sub(r"--mount=from=\S+|ghcr\.io/\S+", "", dockerfile).replace("@@", "")
    assert "FROM {BASE_IMAGE} AS base".replace("{BASE_IMAGE}", "${BASE_IMAGE}") in dockerfile
    assert f"ARG BASE_IMAGE=nvidia/cuda:{spec.cuda_patch}-base-ubuntu24.04" in dockerfile
    assert f"ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/{spec.variant}" in dockerfile
    # the last USER is the fixed non-root UID, and nothing runs as root after it
    users = re.findall(r"^USER (\S+)$", dockerfile, re.MULTILINE)
    assert users == ["10001:10001"]
    after_user = dockerfile.split("USER 10001:10001", 1)[1]
    assert not re.search(r"^(RUN|USER) ", after_user, re.MULTILINE)
    # the labels come last, so the date that changes on every build invalidates no layer
    last = [ln.split()[0] for ln in dockerfile.splitlines() if re.match(r"^[A-Z]+ ", ln)]
    assert last[-3:] == ["ARG", "ARG", "LABEL"]
    assert last.index("CMD") < last.index("LABEL")
    assert "NVIDIA_VISIBLE_DEVICES=all" in dockerfile
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in dockerfile
    for label in ("source", "version", "created"):
        assert f"org.opencontainers.image.{label}=" in dockerfile
    assert f'io.torchrig.torch="{spec.torch_version}"' in dockerfile
    assert f'io.torchrig.cuda="{spec.cuda}"' in dockerfile
    # no secrets in layers: no ARG/ENV token, the index credentials only as a secret mount
    assert not re.search(r"^(ARG|ENV) \S*(TOKEN|PASSWORD|SECRET)", dockerfile, re.M | re.I)
    assert "--mount=type=secret,id=netrc" in dockerfile
    assert files["requirements.txt"].splitlines()[0] == spec.torch_pin
    assert "--constraint /tmp/torchrig/constraints.txt" in dockerfile


def test_flavours_add_what_they_promise(fake_constraints: Fake) -> None:
    runtime = _render(_spec("2.9.1", "12.8", "runtime"), fake_constraints).files
    assert "g++" not in runtime["Dockerfile"]
    compiled = _render(_spec("2.9.1", "12.8", "runtime", with_compiler=True), fake_constraints)
    assert "g++" in compiled.files["Dockerfile"]
    assert "python3.12-dev" in compiled.files["Dockerfile"]

    dev = _render(_spec("2.9.1", "12.8", "dev"), fake_constraints).files
    assert "openssh-server" in dev["Dockerfile"]
    assert "g++" in dev["Dockerfile"]
    assert "EXPOSE 2222 8888" in dev["Dockerfile"]
    sshd = dict(
        line.split(None, 1)
        for line in dev["sshd_config"].splitlines()
        if line and not line.startswith("#")
    )
    assert sshd["PasswordAuthentication"] == "no"
    assert sshd["PermitRootLogin"] == "no"
    assert sshd["KbdInteractiveAuthentication"] == "no"
    assert sshd["AuthenticationMethods"] == "publickey"
    assert int(sshd["Port"]) > 1024
    assert "jupyterlab" in dev["requirements.txt"]

    assert sshd["PermitUserEnvironment"] == "yes"  # sessions get the container's environment
    assert "$HOME/.ssh/environment" in dev["dev-start.sh"]

    serve = _render(_spec("2.9.1", "12.8", "serve"), fake_constraints).files
    assert 'CMD ["/usr/local/bin/torchrig-healthcheck"]' in serve["Dockerfile"]
    assert "/v2/health/ready" in serve["healthcheck.py"]
    assert "TORCHRIG_SERVE_HOST=0.0.0.0" in serve["Dockerfile"]  # a published port reaches it
    assert "TORCHRIG_SERVE_PORT" in serve["healthcheck.py"]  # and the healthcheck asks it
    assert "EXPOSE 8000" in serve["Dockerfile"]
    assert 'ENTRYPOINT ["/usr/local/bin/torchrig-entrypoint"]' in serve["Dockerfile"]
    assert 'CMD ["torchrig", "serve", "/models"]' in serve["Dockerfile"]
    assert "torchrig[s3,gcs]==" in serve["requirements.txt"]  # s3:// and gs:// repositories
    assert "entrypoint.sh" in serve


def test_pythons_other_than_ubuntus_come_from_a_pinned_uv(fake_constraints: Fake) -> None:
    files = _render(_spec("2.9.1", "12.8", "runtime", python="3.11"), fake_constraints).files
    assert re.search(r"--mount=from=ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+,", files["Dockerfile"])
    assert "python3.11 -m venv /opt/venv" in files["Dockerfile"]


def test_constraints_must_be_exact_pins_of_this_image(fake_constraints: Fake) -> None:
    spec = _spec("2.9.1", "12.6", "dev")
    good = fake_constraints(spec)
    with pytest.raises(UsageError, match=r"line 3: 'numpy>=2' is not an exact pin"):
        render_context(spec, good.replace("numpy==2.3.4", "numpy>=2"))
    with pytest.raises(
        UsageError, match=r"pins torch 2\.9\.1\+cu128, but the image is torch 2\.9\.1\+cu126"
    ):
        render_context(spec, good.replace("cu126", "cu128"))
    header = (
        "# torchrig image constraints: torch 2.9.1+cu128 (CUDA 12.8), flavour dev, Python 3.11, x\n"
    )
    with pytest.raises(
        UsageError, match=r"resolved for Python 3\.11, but the image has Python 3\.12"
    ):
        render_context(spec, header + good)
    with pytest.raises(UsageError, match="does not pin jupyterlab"):
        render_context(spec, good.replace("jupyterlab==4.4.10\n", ""))


def test_hadolint_passes_on_every_rendered_dockerfile(
    tmp_path: Path, hadolint: str, fake_constraints: Fake
) -> None:
    # every image plus the variants rendering can produce (compiler, uv Python, cudnn base)
    specs = [_spec(r.torch, r.cuda, r.flavour) for r in ROWS]
    specs += [
        _spec("2.9.1", "12.8", "runtime", with_compiler=True),
        _spec(
            "2.11.0", "13.0", "serve", python="3.13", with_compiler=True, base_kind="cudnn-runtime"
        ),
    ]
    paths = []
    for number, spec in enumerate(specs):
        path = tmp_path / f"Dockerfile.{number}"
        path.write_text(_render(spec, fake_constraints).files["Dockerfile"])
        paths.append(path)
    ignores = [arg for rule in IGNORED_HADOLINT_RULES for arg in ("--ignore", rule)]
    proc = subprocess.run(
        [hadolint, "--no-color", *ignores, *map(str, paths)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "", proc.stdout  # no warning or info either


def test_hadolint_would_catch_a_root_image(
    tmp_path: Path, hadolint: str, fake_constraints: Fake
) -> None:
    """The lint is not a rubber stamp: a Dockerfile ending as root fails it."""
    dockerfile = _render(_spec("2.9.1", "12.8", "runtime"), fake_constraints).files["Dockerfile"]
    path = tmp_path / "Dockerfile"
    path.write_text(dockerfile.replace("USER 10001:10001", "USER root"))
    proc = subprocess.run(
        [hadolint, "--no-color", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0
    assert "DL3002" in proc.stdout
