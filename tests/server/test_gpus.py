"""How `serve --workers` shares the pod's GPUs out, with the device list injected (no GPU
here): the pure split, and the real worker processes' environment."""

from __future__ import annotations

import pytest

from torchrig.server.gpus import describe_split, split_gpus, visible_gpus


@pytest.mark.parametrize(
    ("gpus", "workers", "shares"),
    [
        (["0", "1", "2", "3"], 4, [["0"], ["1"], ["2"], ["3"]]),  # one GPU each
        (["0", "1"], 4, [["0"], ["1"], ["0"], ["1"]]),  # two workers per GPU, evenly
        (["0", "1", "2", "3"], 2, [["0", "2"], ["1", "3"]]),
        ([], 3, [[], [], []]),  # no GPU: nothing set, the workers run on the CPU
        (["GPU-a1", "GPU-b2"], 2, [["GPU-a1"], ["GPU-b2"]]),  # UUIDs as the plugin gives
    ],
)
def test_split(gpus: list[str], workers: int, shares: list[list[str]]) -> None:
    assert split_gpus(gpus, workers) == shares
    used = {gpu for share in split_gpus(gpus, workers) for gpu in share}
    assert used == set(gpus) or len(gpus) > workers


def test_an_uneven_split_is_said() -> None:
    assert describe_split(split_gpus(["0", "1"], 2)) is None
    # fewer workers than GPUs: each places replicas on its whole share, nothing idle
    assert describe_split(split_gpus(["0", "1", "2", "3"], 2)) is None
    assert describe_split(split_gpus(["0", "1"], 4)) is None
    warning = describe_split(split_gpus(["0", "1", "2"], 2))
    assert warning is not None
    assert "--workers 3" in warning
    shared = describe_split(split_gpus(["0", "1"], 3))
    assert shared is not None
    assert "multiple of 2" in shared


def test_visible_gpus_follow_cuda_visible_devices() -> None:
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1,3"}) == ["0", "1", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": " MIG-x , MIG-y "}) == ["MIG-x", "MIG-y"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []  # CUDA's "no device"


def test_several_mig_slices_for_one_worker_are_said() -> None:
    # CUDA enumerates one MIG slice per process: the second would idle
    warning = describe_split(split_gpus(["MIG-a", "MIG-b"], 1))
    assert warning is not None
    assert "--workers 2" in warning
    assert describe_split(split_gpus(["MIG-a", "MIG-b"], 2)) is None
