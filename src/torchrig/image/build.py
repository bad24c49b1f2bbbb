"""Build a rendered context with docker buildx, buildah or podman, the same way with each.

Tags, build arguments and secrets (`id=netrc,src=$HOME/.netrc`) mean the same for all
three. By default the build reaches package indexes the way this machine does: its
`PIP_INDEX_URL` / `PIP_EXTRA_INDEX_URL` and proxy variables become build arguments, and
the CA bundle named by `PIP_CERT` becomes the secret `pip_cert`, mounted only for the
install step and never written into a layer.
"""

from __future__ import annotations

import datetime
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from torchrig.errors import UsageError
from torchrig.image.engine import Engine, find_engine
from torchrig.image.tags import REPOSITORY

# variables of this machine that say how it reaches package indexes
_INDEX_ARGS = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL")
_PROXY_ARGS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


def host_index_settings(
    environ: Mapping[str, str] | None = None,
) -> tuple[list[str], list[str]]:
    """(build arguments, secrets) that let a build reach indexes as this machine does."""
    env = os.environ if environ is None else environ
    args = [f"{name}={env[name]}" for name in (*_INDEX_ARGS, *_PROXY_ARGS) if env.get(name)]
    secrets = []
    cert = env.get("PIP_CERT")
    if cert:
        if not Path(cert).is_file():
            raise UsageError(
                f"PIP_CERT names {cert}, which is not a file; fix the variable or build with "
                "--no-host-config"
            )
        secrets.append(f"id=pip_cert,src={cert}")
    return args, secrets


def _check_pairs(values: Sequence[str], option: str, example: str) -> None:
    for value in values:
        key = value.split("=", 1)[0]
        if "=" not in value or not key or any(ch.isspace() for ch in key):
            raise UsageError(f"{option} {value!r} must be KEY=VALUE, e.g. {example}")


def _check_secrets(secrets: Sequence[str]) -> None:
    for secret in secrets:
        fields = dict(part.split("=", 1) for part in secret.split(",") if "=" in part)
        if "id" not in fields:
            raise UsageError(f"--secret {secret!r} needs id=NAME, e.g. id=netrc,src=$HOME/.netrc")
        src = fields.get("src") or fields.get("source")
        if src is not None and not Path(src).is_file():
            raise UsageError(f"--secret {secret!r}: {src} is not a file")


def build_commands(
    engine: Engine,
    context: Path,
    tags: Sequence[str],
    *,
    push: bool = False,
    platform: str = "linux/amd64",
    secrets: Sequence[str] = (),
    build_args: Sequence[str] = (),
    created: str | None = None,
) -> list[list[str]]:
    """The commands that build (and push) a rendered context with `engine`.

    buildah and podman write the docker image format: the OCI format has no HEALTHCHECK,
    and the serve image's healthcheck must survive the build.
    """
    stamp = created or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    common = ["--platform", platform, "--build-arg", f"IMAGE_CREATED={stamp}"]
    for arg in build_args:
        common += ["--build-arg", arg]
    for tag in tags:
        common += ["--tag", tag]
    for secret in secrets:
        common += ["--secret", secret]
    if engine.name == "docker":
        return [engine.argv("buildx", "build", *common, "--push" if push else "--load",
                            str(context))]  # fmt: skip
    verb = "bud" if engine.name == "buildah" else "build"
    commands = [engine.argv(verb, "--format", "docker", "--layers", *common, str(context))]
    if push:
        commands += [engine.argv("push", tag) for tag in tags]
    return commands


def build(
    context: Path,
    tags: Sequence[str],
    *,
    push: bool = False,
    platform: str = "linux/amd64",
    secrets: Sequence[str] = (),
    build_args: Sequence[str] = (),
    engine: str = "auto",
    host_config: bool = True,
) -> int:
    """Build (and optionally push) a rendered context; returns the engine's exit code."""
    if not (context / "Dockerfile").is_file():
        raise UsageError(
            f"{context} has no Dockerfile; render one first: torchrig image render ... -o {context}"
        )
    if not tags:
        raise UsageError("give at least one --tag (torchrig image tag prints the standard one)")
    for tag in tags:
        if f"{REPOSITORY}:" not in tag:
            raise UsageError(f"tag {tag!r} does not follow <registry>/{REPOSITORY}:<tag>")
    _check_pairs(build_args, "--build-arg", "PIP_INDEX_URL=https://mirror.example.com/simple")
    _check_secrets(secrets)
    all_args, all_secrets = list(build_args), list(secrets)
    if host_config:
        host_args, host_secrets = host_index_settings()
        given = {arg.split("=", 1)[0] for arg in build_args}
        all_args = [a for a in host_args if a.split("=", 1)[0] not in given] + all_args
        given_ids = {s.split("id=", 1)[1].split(",", 1)[0] for s in secrets if "id=" in s}
        all_secrets += [
            s for s in host_secrets if "id=pip_cert" not in s or "pip_cert" not in given_ids
        ]
    found = find_engine(engine, purpose="build")
    for argv in build_commands(found, context, tags, push=push, platform=platform,
                               secrets=all_secrets, build_args=all_args):  # fmt: skip
        code = subprocess.run(argv, check=False).returncode
        if code != 0:
            return code
    return 0
