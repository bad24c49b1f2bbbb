"""`deploy k8s --gpus N` and the server agree: the GPUs the pod is given, the workers the
rendered settings start, and where those workers' `device = "auto"` replicas go (the
server's own split and placement, with the pod's device list injected)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from torchrig.deploy import DeploySpec, render_k8s, to_yaml
from torchrig.server.gpus import describe_split, replica_gpus, split_gpus
from torchrig.settings import load_settings

IMAGE = "ghcr.io/acme/pytorch:2.11.0-cuda12.8-serve"


def _pod(**changes: Any) -> tuple[DeploySpec, int, int]:
    """(spec, GPUs in the container's limits, workers its settings start)."""
    spec = DeploySpec.create(
        **{"name": "ranker", "image": IMAGE, "model_repo": "s3://models/ranking", **changes}
    )
    docs = [doc for doc in yaml.safe_load_all(to_yaml(render_k8s(spec))) if doc]
    deployment = next(doc for doc in docs if doc["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    gpus = int(container["resources"]["limits"]["nvidia.com/gpu"])
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    return spec, gpus, load_settings(environ=env).serve.workers


@pytest.mark.parametrize(
    ("changes", "gpus", "workers"),
    [
        ({"gpus": 4}, 4, 4),  # the default: a worker per GPU
        ({"gpus": 4, "workers": 2}, 4, 2),  # two GPUs per worker, a replica on each
        ({"gpus": 2, "workers": 4}, 2, 4),  # two workers per GPU
        ({"gpus": 8, "workers": 1}, 8, 1),  # one process over all eight
    ],
)
def test_every_gpu_the_pod_gets_carries_replicas(
    changes: dict[str, Any], gpus: int, workers: int
) -> None:
    spec, limit, started = _pod(**changes)
    assert (limit, started) == (gpus, workers)
    # what the device plugin gives the container, as the parent server process sees it
    visible = [str(index) for index in range(limit)]
    shares = split_gpus(visible, started)
    placed = replica_gpus(shares, "auto", instances=2)
    assert sorted({gpu for worker in placed for gpu in worker}) == visible
    assert all(worker for worker in placed)  # no worker left on the CPU
    assert describe_split(shares) is None  # even: nothing to warn about
    assert not [note for note in spec.notes() if "--workers" in note]


def test_an_uneven_split_is_said_by_both() -> None:
    spec, limit, started = _pod(gpus=4, workers=3)
    shares = split_gpus([str(index) for index in range(limit)], started)
    assert sorted(len(share) for share in shares) == [1, 1, 2]
    warning = describe_split(shares)
    assert warning is not None
    assert "give --workers 4" in warning
    assert any("--workers 3 for 4 GPUs" in note for note in spec.notes())
    # every GPU still carries a replica
    assert sorted({g for worker in replica_gpus(shares) for g in worker}) == ["0", "1", "2", "3"]


def test_a_pinned_device_uses_that_gpu_of_each_share() -> None:
    shares = split_gpus(["0", "1", "2", "3"], 2)  # [0, 2] and [1, 3]
    assert replica_gpus(shares, "cuda:1") == [["2"], ["3"]]
    assert replica_gpus(shares, ["cuda:0", "cuda:0"]) == [["0", "0"], ["1", "1"]]
    assert replica_gpus([[], []], "auto") == [[], []]  # no GPU: the CPU


def test_mig_slices_need_a_worker_each() -> None:
    # CUDA enumerates one MIG slice per process: a worker given two would idle one
    def spec(**changes: Any) -> DeploySpec:
        return DeploySpec.create(
            name="ranker",
            image=IMAGE,
            model_repo="s3://models/ranking",
            gpu_resource="nvidia.com/mig-1g.10gb",
            gpus=2,
            **changes,
        )

    assert any("MIG slices" in note for note in spec(workers=1).notes())
    assert describe_split(split_gpus(["MIG-a", "MIG-b"], 1)) is not None  # the server too
    assert not [note for note in spec().notes() if "MIG" in note]  # a worker per slice
    assert describe_split(split_gpus(["MIG-a", "MIG-b"], 2)) is None
