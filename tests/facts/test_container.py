"""Container detection from real marker files laid out under a temporary root."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchrig.facts.container import read_container


def touch(path: Path, text: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_bare_host(tmp_path: Path) -> None:
    touch(tmp_path / "proc/1/cgroup", "0::/init.scope\n")

    facts = read_container({}, tmp_path)

    assert not facts.in_container
    assert facts.runtime is None
    assert not facts.gpu_requested
    assert facts.device_nodes == []


def test_docker_with_gpus(tmp_path: Path) -> None:
    touch(tmp_path / ".dockerenv")
    for node in ("nvidia1", "nvidiactl", "nvidia0", "nvidia-uvm"):
        touch(tmp_path / "dev" / node)
    touch(tmp_path / "dev" / "null")

    facts = read_container({"NVIDIA_VISIBLE_DEVICES": "all"}, tmp_path)

    assert facts.in_container
    assert facts.runtime == "docker"
    assert facts.gpu_requested
    assert facts.gpu_request_hint == "NVIDIA_VISIBLE_DEVICES=all"
    dev = tmp_path / "dev"
    assert facts.device_nodes == [
        str(dev / "nvidia-uvm"),
        str(dev / "nvidia0"),
        str(dev / "nvidia1"),
        str(dev / "nvidiactl"),
    ]


def test_podman(tmp_path: Path) -> None:
    touch(tmp_path / "run/.containerenv")

    assert read_container({}, tmp_path).runtime == "podman"


def test_kubernetes_from_the_service_variable(tmp_path: Path) -> None:
    facts = read_container({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, tmp_path)

    assert (facts.in_container, facts.runtime) == (True, "kubernetes")


@pytest.mark.parametrize(
    ("init_cgroup", "runtime"),
    [
        ("12:memory:/kubepods/burstable/pod1/abc\n", "kubernetes"),
        ("0::/system.slice/docker-0123abcd.scope\n", "docker"),
        ("1:name=systemd:/machine.slice/libpod-0123.scope\n", "podman"),
        ("0::/system.slice/containerd.service\n", "containerd"),
    ],
)
def test_runtime_from_init_cgroup(tmp_path: Path, init_cgroup: str, runtime: str) -> None:
    touch(tmp_path / "proc/1/cgroup", init_cgroup)

    assert read_container({}, tmp_path).runtime == runtime


@pytest.mark.parametrize("value", ["void", "none", "", "NONE"])
def test_nvidia_visible_devices_that_mean_no_gpu(tmp_path: Path, value: str) -> None:
    facts = read_container({"NVIDIA_VISIBLE_DEVICES": value}, tmp_path)

    assert not facts.gpu_requested
    assert facts.gpu_request_hint is None


def test_device_plugin_uuids_are_a_gpu_request(tmp_path: Path) -> None:
    uuid = "GPU-3b9e2b5c-8a47-4f2d-9d2c-0c1f2d3e4f5a"

    facts = read_container({"NVIDIA_VISIBLE_DEVICES": uuid}, tmp_path)

    assert facts.gpu_requested
    assert facts.gpu_request_hint == f"NVIDIA_VISIBLE_DEVICES={uuid}"


def test_this_machine_reads_without_error() -> None:
    facts = read_container({})

    assert facts.in_container == (facts.runtime is not None)
    assert all(node.startswith("/dev/nvidia") for node in facts.device_nodes)
