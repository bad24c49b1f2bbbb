"""`image build`'s commands for each engine, and how the build reaches package indexes."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from torchrig.errors import UsageError
from torchrig.image.build import build_commands, host_index_settings
from torchrig.image.engine import Engine

TAG = "registry.example.com/platform/pytorch:2.13.0-cpu-serve"


@pytest.mark.parametrize("name", ["docker", "buildah", "podman"])
def test_tags_build_arguments_and_secrets_mean_the_same_to_every_engine(name: str) -> None:
    engine = Engine(name, f"/usr/bin/{name}")  # type: ignore[arg-type]
    commands = build_commands(
        engine,
        Path("ctx"),
        [TAG],
        secrets=["id=netrc,src=/home/me/.netrc"],
        build_args=["PIP_INDEX_URL=https://mirror.example.com/simple"],
        created="2026-11-30T00:00:00Z",
    )
    argv = commands[0]
    pairs = list(itertools.pairwise(argv))
    assert ("--tag", TAG) in pairs
    assert ("--secret", "id=netrc,src=/home/me/.netrc") in pairs
    assert ("--build-arg", "PIP_INDEX_URL=https://mirror.example.com/simple") in pairs
    assert ("--build-arg", "IMAGE_CREATED=2026-11-30T00:00:00Z") in pairs
    assert argv[-1] == "ctx"
    if name == "docker":
        assert argv[1:3] == ["buildx", "build"]
        assert "--load" in argv
    else:
        # the docker format keeps HEALTHCHECK; --layers gives the layer cache
        assert ("--format", "docker") in pairs
        assert "--layers" in argv
        assert argv[1] == ("bud" if name == "buildah" else "build")
    assert len(commands) == 1


@pytest.mark.parametrize("name", ["buildah", "podman"])
def test_push_is_a_separate_command_for_daemonless_engines(name: str) -> None:
    engine = Engine(name, name)  # type: ignore[arg-type]
    commands = build_commands(engine, Path("ctx"), [TAG, TAG + "-20261130"], push=True)
    assert commands[1:] == [[name, "push", TAG], [name, "push", TAG + "-20261130"]]
    docker = build_commands(Engine("docker", "docker"), Path("ctx"), [TAG], push=True)
    assert "--push" in docker[0]
    assert len(docker) == 1


def test_the_build_reaches_indexes_as_this_machine_does(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    args, secrets = host_index_settings({
        "PIP_INDEX_URL": "https://mirror.example.com/simple",
        "HTTPS_PROXY": "http://proxy.example.com:3128",
        "NO_PROXY": "localhost",
        "PIP_CERT": str(bundle),
        "PIP_FIND_LINKS": "/opt/wheels",  # a local path means nothing inside the build
        "HOME": "/root",
    })  # fmt: skip
    assert args == [
        "PIP_INDEX_URL=https://mirror.example.com/simple",
        "HTTPS_PROXY=http://proxy.example.com:3128",
        "NO_PROXY=localhost",
    ]
    # the CA bundle is a secret (mounted for the install step), never a build argument
    assert secrets == [f"id=pip_cert,src={bundle}"]
    assert host_index_settings({}) == ([], [])


def test_a_pip_cert_that_is_not_a_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"PIP_CERT names .*absent.pem, which is not a file"):
        host_index_settings({"PIP_CERT": str(tmp_path / "absent.pem")})
