"""DeploySpec validation: every bad input is a UsageError that names the problem and the fix."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from torchrig.deploy.spec import DeploySpec, check_image, parse_quantity
from torchrig.errors import UsageError

GOOD: dict[str, Any] = {
    "name": "ranker",
    "image": "ghcr.io/acme/pytorch:2.11.0-cuda12.8-serve",
    "model_repo": "s3://models/ranking",
}


def spec(**changes: Any) -> DeploySpec:
    return DeploySpec.create(**{**GOOD, **changes})


def test_defaults() -> None:
    made = spec()
    assert (made.gpus, made.memory, made.cpu) == (1, "16Gi", "4")
    assert (made.min_replicas, made.max_replicas, made.replicas) == (2, 8, None)
    assert made.autoscaled
    assert made.shm_size == "2Gi"
    assert made.drain_timeout_s == 30.0
    assert made.node_selector == (("nvidia.com/gpu.present", "true"),)
    (note,) = made.notes()  # an object store and no identity: say how to give one
    assert "--service-account" in note
    assert "--env-from-secret" in note
    assert spec(service_account="ranker-reader").notes() == []


def test_memory_default_and_shm_scale_with_the_gpus() -> None:
    made = spec(gpus=4)
    assert (made.memory, made.shm_size) == ("64Gi", "8Gi")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("16Gi", Decimal(16 << 30)),
        ("64G", Decimal(64 * 10**9)),
        ("1.5Gi", Decimal(3 << 29)),
        ("500m", Decimal("0.5")),
        ("4", Decimal(4)),
        ("2048Mi", Decimal(2 << 30)),
    ],
)
def test_quantities(text: str, value: Decimal) -> None:
    assert parse_quantity(text, what="x") == value


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "Ranker"}, "--name 'Ranker' is not a valid name"),
        ({"name": "ranker_v2"}, "DNS-1123"),
        ({"name": "2ranker"}, "starting with a letter"),
        ({"name": "ranker-"}, "ending with a letter or digit"),
        ({"name": "r" * 54}, "1 to 53"),
        ({"name": ""}, "is not a valid name"),
        ({"namespace": "Serving"}, "--namespace 'Serving' is not a valid namespace"),
        ({"image": "ghcr.io/acme/pytorch"}, "has no tag or digest"),
        ({"image": "ghcr.io/acme/pytorch:latest"}, "moving tag 'latest'"),
        ({"image": "ghcr.io/Acme/pytorch:1"}, "not a valid image reference"),
        ({"image": "ghcr.io/acme/pytorch@sha256:abc"}, "malformed digest"),
        ({"image": "pytorch:bad tag"}, "not a valid image reference"),
        ({"model_repo": "models/ranking"}, "neither a URL nor an absolute path"),
        ({"gpus": 0}, "at least 1 GPU"),
        ({"gpus": -1}, "at least 1 GPU"),
        ({"gpus": 9}, "more than a node has (8"),
        ({"memory": "0Gi"}, "must be positive"),
        ({"memory": "-4Gi"}, "must be positive"),
        ({"memory": "lots"}, "is not a Kubernetes quantity"),
        ({"memory": "16GB"}, "is not a Kubernetes quantity"),
        ({"memory": "16000m"}, "milli-bytes"),
        ({"memory": "2Gi"}, "give at least 3Gi"),
        ({"gpus": 8, "memory": "16Gi"}, "/dev/shm (16Gi for 8 GPU(s), 8 worker(s))"),
        ({"cpu": "0"}, "--cpu '0' must be positive"),
        ({"cpu": "10m"}, "at least 100m"),
        ({"replicas": 0}, "--replicas 0 must be at least 1"),
        ({"replicas": 2, "max_replicas": 4}, "not both"),
        ({"min_replicas": 0}, "--min-replicas 0 must be at least 1"),
        ({"min_replicas": 5, "max_replicas": 3}, "--max-replicas 3 is below --min-replicas 5"),
        ({"target_inflight": 0}, "--target-inflight 0 must be at least 1"),
        ({"drain_timeout_s": 0.0}, "--drain-timeout-s 0.0 must lie in (0, 3600]"),
        ({"drain_timeout_s": float("nan")}, "must lie in (0, 3600]"),
        ({"node_selector": ("gpu",)}, "is not KEY=VALUE"),
        ({"node_selector": ("a b=c",)}, "is not KEY=VALUE"),
        ({"token_secret": "My_Secret"}, "not a valid Secret name"),
    ],
)
def test_bad_input_names_problem_and_fix(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        spec(**changes)
    assert message in caught.value.message
    assert "\n" not in caught.value.message


@pytest.mark.parametrize(
    "image",
    [
        "pytorch:2.9.1-cuda12.8-serve",
        "registry.example.com:5000/platform/pytorch:2.9.1-cuda12.8-serve",
        "ghcr.io/acme/pytorch@sha256:" + "a" * 64,
        "ghcr.io/acme/pytorch:2.9.1-cuda12.8-serve@sha256:" + "0" * 64,
        "localhost:5000/pytorch:dev_1",
    ],
)
def test_pinned_images_pass(image: str) -> None:
    assert check_image(image) == image


def test_max_replicas_defaults_to_at_least_the_minimum() -> None:
    assert spec(min_replicas=12).max_replicas == 12


def test_node_selector_replaces_the_default() -> None:
    made = spec(node_selector=("nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3",))
    assert made.node_selector == (("nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3"),)


def test_notes_for_a_foreign_image_and_an_extra_the_image_lacks() -> None:
    notes = spec(
        image="pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime",
        model_repo="az://models/ranking",
        service_account="ranker",
    ).notes()
    assert len(notes) == 2
    assert "not a torchrig serve image" in notes[0]
    # az:// is read by adlfs: the render names the extra the serve image lacks
    assert "need the 'azure' extra" in notes[1]
    assert "torchrig[s3,gcs,azure]" in notes[1]


def test_workers_follow_the_gpus_and_cpu_and_shm_follow_the_workers() -> None:
    """`serve --workers` gives each worker its share of the GPUs; deploy renders one per GPU."""
    four = spec(gpus=4)
    assert (four.workers, four.cpu, four.shm_size) == (4, "8", "8Gi")
    more = spec(gpus=1, workers=6, memory="32Gi")
    assert (more.workers, more.cpu, more.shm_size) == (6, "12", "12Gi")
    fewer = spec(gpus=4, workers=2)  # two GPUs per worker, a replica on each
    assert not [note for note in fewer.notes() if "--workers" in note]
    uneven = spec(gpus=4, workers=3)
    assert any("give --workers 4" in note for note in uneven.notes())
    mig = spec(gpu_resource="nvidia.com/mig-1g.10gb")
    assert (mig.memory, mig.shm_size) == ("20Gi", "1Gi")  # sized to the 10 GB slice
    small = spec(gpu_resource="nvidia.com/mig-1g.5gb", gpus=2)
    assert (small.memory, small.workers) == ("20Gi", 2)
