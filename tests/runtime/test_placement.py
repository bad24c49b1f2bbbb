"""Where replicas go, with the visible GPU count injected (placement is a pure function)."""

from __future__ import annotations

import pytest

from torchrig.errors import ConfigError, RepositoryError
from torchrig.repository.config import parse_config
from torchrig.runtime.placement import Placement, describe, place
from torchrig.runtime.replicas import physical_gpu


def test_auto_places_instances_on_every_visible_gpu() -> None:
    assert place("auto", 4, 2) == [Placement(f"cuda:{k}", 2) for k in range(4)]
    assert place("auto", 1, 3) == [Placement("cuda:0", 3)]


def test_auto_without_a_gpu_is_one_cpu_replica() -> None:
    assert place("auto", 0, 2) == [Placement("cpu", 2)]


@pytest.mark.parametrize(
    ("requested", "expected"),
    [("cpu", "cpu"), ("cuda", "cuda:0"), ("cuda:0", "cuda:0"), ("cuda:3", "cuda:3")],
)
def test_one_named_device_is_one_replica(requested: str, expected: str) -> None:
    assert place(requested, 4, 1) == [Placement(expected, 1)]


def test_a_devices_list_is_one_replica_per_entry_repeats_included() -> None:
    assert place(["cuda:0", "cuda:2", "cuda:2"], 4, 1) == [
        Placement("cuda:0", 1),
        Placement("cuda:2", 1),
        Placement("cuda:2", 1),
    ]
    assert place(["cpu", "cpu"], 0, 2) == [Placement("cpu", 2), Placement("cpu", 2)]


@pytest.mark.parametrize(
    ("requested", "count", "message"),
    [
        ("cuda:2", 2, "cuda:2 does not exist: 2 GPU(s) visible"),
        ("cuda", 0, "CUDA is not available here"),
        (["cuda:0", "cuda:1"], 1, "cuda:1 does not exist: 1 GPU(s)"),
        (["auto"], 2, '"auto" stands alone'),
        (["gpu0"], 2, "is not one of"),
        ([], 2, "devices is empty"),
    ],
)
def test_a_device_that_is_not_there_names_what_is(
    requested: str | list[str], count: int, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        place(requested, count, 1)
    assert message in str(caught.value)
    assert caught.value.exit_code != 0


def test_describe_names_devices_and_instances() -> None:
    assert describe(place("auto", 2, 2)) == "cuda:0, cuda:1 (2 instances each)"


def test_config_takes_a_devices_list_and_refuses_bad_entries() -> None:
    assert parse_config('devices = ["cuda:0", "cuda:1"]').devices == ["cuda:0", "cuda:1"]
    with pytest.raises(RepositoryError, match="each entry must be"):
        parse_config('devices = ["auto"]')
    with pytest.raises(RepositoryError, match="set device or devices, not both"):
        parse_config('device = "cpu"\ndevices = ["cpu"]')


def test_physical_gpu_follows_cuda_visible_devices() -> None:
    # a worker given GPUs 2 and 3 sees them as cuda:0 and cuda:1
    assert physical_gpu("cuda:1", {"CUDA_VISIBLE_DEVICES": "2,3"}) == "3"
    assert physical_gpu("cuda:0", {"CUDA_VISIBLE_DEVICES": "GPU-ab12"}) == "GPU-ab12"
    assert physical_gpu("cuda:1", {}) == "1"
    assert physical_gpu("cpu", {"CUDA_VISIBLE_DEVICES": "0"}) == ""
