"""`docker buildx build` of a rendered context, with a clear error where Docker is missing."""

from __future__ import annotations

import datetime
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from torchrig.errors import TorchrigError, UsageError
from torchrig.image.tags import REPOSITORY


class DockerUnavailableError(TorchrigError):
    """No Docker client, or no engine it can reach, so nothing can be built here."""

    status_code = 503
    exit_code = 2


def docker_engine(docker: str | None = None, timeout_s: float = 30.0) -> str:
    """The docker client's path once `docker info` reached an engine; else a clear error."""
    client = docker or shutil.which("docker")
    if client is None:
        raise DockerUnavailableError(
            "no docker client on PATH; install Docker (with the buildx plugin) or build the "
            "rendered context on a machine that has it"
        )
    try:
        proc = subprocess.run(
            [client, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DockerUnavailableError(f"docker info did not answer: {exc}") from None
    if proc.returncode != 0 or not proc.stdout.strip():
        reason = " ".join((proc.stderr or proc.stdout).split())[:300] or "no server version"
        raise DockerUnavailableError(
            f"no Docker engine is reachable ({reason}); start the Docker daemon or point "
            "DOCKER_HOST at one, or build the rendered context where one runs"
        )
    return client


def buildx_command(
    client: str,
    context: Path,
    tags: Sequence[str],
    *,
    push: bool = False,
    platform: str = "linux/amd64",
    secrets: Sequence[str] = (),
    created: str | None = None,
) -> list[str]:
    """The `docker buildx build` argv for a rendered context."""
    stamp = created or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    argv = [client, "buildx", "build", "--platform", platform, "--build-arg",
            f"IMAGE_CREATED={stamp}"]  # fmt: skip
    for tag in tags:
        argv += ["--tag", tag]
    for secret in secrets:
        argv += ["--secret", secret]
    argv.append("--push" if push else "--load")
    argv.append(str(context))
    return argv


def build(
    context: Path,
    tags: Sequence[str],
    *,
    push: bool = False,
    platform: str = "linux/amd64",
    secrets: Sequence[str] = (),
    docker: str | None = None,
) -> int:
    """Build (and optionally push) a rendered context; returns buildx's exit code."""
    if not (context / "Dockerfile").is_file():
        raise UsageError(
            f"{context} has no Dockerfile; render one first: torchrig image render ... -o {context}"
        )
    if not tags:
        raise UsageError("give at least one --tag (torchrig image tag prints the standard one)")
    for tag in tags:
        if f"{REPOSITORY}:" not in tag:
            raise UsageError(f"tag {tag!r} does not follow <registry>/{REPOSITORY}:<tag>")
    client = docker_engine(docker)
    argv = buildx_command(client, context, tags, push=push, platform=platform, secrets=secrets)
    return subprocess.run(argv, check=False).returncode
