"""A pipeline whose first member decodes images (its own `[[preprocess]]` image step): the
pipeline takes JPEG bytes (BYTES) over REST and gRPC, and answers what the backbone
answers for the same bytes followed by the head run in this process."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from tritonclient import grpc as tgrpc
from tritonclient import http as thttp
from tritonclient.utils import InferenceServerException

from serving import running
from torchrig.packaging import load_program, pack, read_manifest
from torchrig.repository import ModelConfig
from torchrig.settings import ServeSettings

BACKBONE_TOML = """\
device = "cpu"
warmup = false

[batching]
max_batch_size = 8

[[preprocess]]
step = "image"
resize = 36
center_crop = 32
mean = [0.5, 0.5, 0.5]
std = [0.25, 0.25, 0.25]
"""
VIDEO_TOML = """\
[[pipeline.step]]
model = "backbone"
input_map = { image = "frame" }

[[pipeline.step]]
model = "head"
input_map = { x = "features" }
output_map = { logits = "scores" }
"""


class Backbone(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.conv(pixels))).flatten(1)


def jpeg(seed: int, width: int, height: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("video") / "models"
    torch.manual_seed(0)
    pack(Backbone(), (torch.randn(2, 3, 32, 32),), name="backbone", repository=root,
         output_names=["features"])  # fmt: skip
    (root / "backbone" / "config.toml").write_text(BACKBONE_TOML)
    pack(torch.nn.Linear(8, 4), {"x": torch.randn(2, 8)}, name="head", repository=root,
         output_names=["logits"], config=ModelConfig(warmup=False))  # fmt: skip
    (root / "video").mkdir()
    (root / "video" / "config.toml").write_text(VIDEO_TOML)
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[tuple[str, Any]]:
    with running(repo, ServeSettings(port=0, log_format="text")) as served:
        yield served


def head_in_process(repo: Path, features: np.ndarray) -> np.ndarray:
    program = load_program(repo / "head" / "1", read_manifest(repo / "head" / "1"))
    with torch.inference_mode():
        result: np.ndarray = program({"x": torch.from_numpy(features.copy())})["logits"].numpy()
    return result


def test_jpeg_bytes_through_the_pipeline_equal_the_members_in_sequence(
    server: tuple[str, Any], repo: Path
) -> None:
    url, state = server
    frames = np.array([jpeg(1, 48, 40), jpeg(2, 40, 64), jpeg(3, 50, 50)], dtype=np.object_)
    client = thttp.InferenceServerClient(url.removeprefix("http://"))
    meta = client.get_model_metadata("video")
    assert meta["inputs"] == [{"name": "frame", "datatype": "BYTES", "shape": [-1]}]
    # the backbone alone, served, on the same bytes: its features, then the head here
    direct = thttp.InferInput("image", [3], "BYTES")
    direct.set_data_from_numpy(frames)
    features = client.infer("backbone", [direct]).as_numpy("features")
    assert features is not None
    expected = head_in_process(repo, features)

    rest = thttp.InferInput("frame", [3], "BYTES")
    rest.set_data_from_numpy(frames)
    got = client.infer("video", [rest]).as_numpy("scores")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    grpc_client = tgrpc.InferenceServerClient(state.grpc_address)
    remote = tgrpc.InferInput("frame", [3], "BYTES")
    remote.set_data_from_numpy(frames)
    got = grpc_client.infer("video", [remote]).as_numpy("scores")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_a_broken_image_fails_its_request_with_the_member_reason(
    server: tuple[str, Any],
) -> None:
    url, _ = server
    client = thttp.InferenceServerClient(url.removeprefix("http://"))
    bad = thttp.InferInput("frame", [1], "BYTES")
    bad.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("video", [bad])
    assert caught.value.status() == "400"
    message = caught.value.message()
    assert message.startswith("pipeline video, step 1 (backbone): ")
    assert "is not a JPEG or PNG image" in message
