"""The video-understanding service end to end: ResNet-50 and ViT-B/16 (random weights)
packed with an image pipeline in config.toml (decode, resize, center-crop, CHW, FP32,
ImageNet normalisation; softmax and top-5 with labels). Clients send real JPEG (and PNG)
bytes made here with Pillow, over REST (tritonclient.http, binary BYTES) and gRPC
(tritonclient.grpc); the answers equal the same steps done by hand here, then the model."""

from __future__ import annotations

import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from tritonclient import grpc as tgrpc
from tritonclient import http as thttp
from tritonclient.utils import InferenceServerException

from models_zoo import resnet50, vit_b_16
from serving import running
from torchrig.packaging import pack

SIDE = 64  # small images keep the test fast; both architectures take them
RESIZE = 72
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
CLASSES = 1000
LABELS = [f"class-{i}" for i in range(CLASSES)]
CONFIG = f"""
device = "cpu"

[batching]
max_batch_size = 8

[[preprocess]]
step = "image"
resize = {RESIZE}
center_crop = {SIDE}
mean = {MEAN}
std = {STD}

[[postprocess]]
step = "softmax"

[[postprocess]]
step = "top_k"
k = 5
into = "classes"
"""


def photo(seed: int, width: int, height: int, fmt: str = "JPEG") -> bytes:
    """An encoded image with smooth structure and some noise, as photos have."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [
        128
        + 100 * np.sin(x / rng.uniform(5, 20) + rng.uniform(0, 6)) * np.cos(y / rng.uniform(5, 20))
        for _ in range(3)
    ]
    pixels = np.stack(channels, axis=-1) + rng.normal(0, 12, (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=90) if fmt == "JPEG" else image.save(buffer, fmt)
    return buffer.getvalue()


def by_hand(data: bytes) -> torch.Tensor:
    """The documented steps, written out: decode to RGB, the shorter side to RESIZE
    (bilinear), the center SIDE x SIDE, /255, (x - mean) / std, CHW."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    width, height = image.size
    if width <= height:
        size = (RESIZE, int(RESIZE * height / width))
    else:
        size = (int(RESIZE * width / height), RESIZE)
    image = image.resize(size, Image.Resampling.BILINEAR)
    left = round((image.width - SIDE) / 2)
    top = round((image.height - SIDE) / 2)
    image = image.crop((left, top, left + SIDE, top + SIDE))
    array = np.asarray(image, dtype=np.float32) / 255.0
    array = (array - np.array(MEAN, dtype=np.float32)) / np.array(STD, dtype=np.float32)
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def expected(module: torch.nn.Module, images: list[bytes]) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(module(torch.stack([by_hand(data) for data in images])), dim=1)


IMAGES = [
    photo(1, 96, 80),
    photo(2, 64, 120),
    photo(3, 200, 150),
    photo(4, 90, 90, fmt="PNG"),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """Both models packed once (export is the slow part) and served for the module."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("vision") / "models"
    modules = {"resnet50": resnet50().eval(), "vit_b_16": vit_b_16(image_size=SIDE).eval()}
    for name, module in modules.items():
        pack(
            module,
            (torch.randn(2, 3, SIDE, SIDE),),
            name=name,
            repository=root,
            version=1,
            max_batch_size=8,
            golden_examples=0,
            output_names=["logits"],
            labels={"": LABELS},
        )
        (root / name / "config.toml").write_text(CONFIG)
    with running(root) as (url, state):
        yield url, state, modules


MODELS = ["resnet50", "vit_b_16"]


def check(module: torch.nn.Module, images: list[bytes], probs: Any, classes: Any) -> None:
    want = expected(module, images)
    got = torch.from_numpy(np.array(probs))
    assert got.shape == (len(images), CLASSES)
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-6)
    top = torch.topk(want.double(), 5, dim=1)
    for row, answer in enumerate(classes):
        parts = [(item if isinstance(item, str) else item.decode()).split(":") for item in answer]
        assert [int(index) for _, index, _ in parts] == top.indices[row].tolist()
        assert [label for _, _, label in parts] == [LABELS[i] for i in top.indices[row]]
        assert [float(score) for score, _, _ in parts] == pytest.approx(
            top.values[row].tolist(), abs=1e-4
        )


@pytest.mark.parametrize("model", MODELS)
def test_rest_jpeg_batch_equals_steps_by_hand(
    served: tuple[str, Any, dict[str, Any]], model: str
) -> None:
    url, _, modules = served
    client = thttp.InferenceServerClient(url.removeprefix("http://"))
    tensor = thttp.InferInput("image", [len(IMAGES)], "BYTES")
    tensor.set_data_from_numpy(np.array(IMAGES, dtype=np.object_))
    # the scores binary, the classes as JSON strings
    outputs = [
        thttp.InferRequestedOutput("logits", binary_data=True),
        thttp.InferRequestedOutput("classes", binary_data=False),
    ]
    result = client.infer(model, [tensor], outputs=outputs)
    assert result.get_output("classes")["data"][0].count(":") == 2  # JSON: a string
    check(modules[model], IMAGES, result.as_numpy("logits"), result.as_numpy("classes"))


@pytest.mark.parametrize("model", MODELS)
def test_grpc_jpeg_batch_equals_steps_by_hand(
    served: tuple[str, Any, dict[str, Any]], model: str
) -> None:
    _, state, modules = served
    client = tgrpc.InferenceServerClient(state.grpc_address)
    images = IMAGES[:3]
    tensor = tgrpc.InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
    result = client.infer(model, [tensor])
    check(modules[model], images, result.as_numpy("logits"), result.as_numpy("classes"))


def test_metadata_shows_the_bytes_input_and_final_outputs(
    served: tuple[str, Any, dict[str, Any]],
) -> None:
    url, state, _ = served
    meta = httpx.get(f"{url}/v2/models/resnet50").json()
    assert meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [
        {"name": "logits", "datatype": "FP32", "shape": [-1, CLASSES]},
        {"name": "classes", "datatype": "BYTES", "shape": [-1, 5]},
    ]
    grpc_meta = tgrpc.InferenceServerClient(state.grpc_address).get_model_metadata("vit_b_16")
    assert [(t.name, t.datatype, list(t.shape)) for t in grpc_meta.inputs] == [
        ("image", "BYTES", [-1])
    ]
    config = httpx.get(f"{url}/v2/models/resnet50/config").json()
    assert config["input"] == [{"name": "image", "data_type": "TYPE_STRING", "dims": []}]
    assert config["output"][1] == {"name": "classes", "data_type": "TYPE_STRING", "dims": [5]}


def test_a_bad_image_fails_only_its_own_request(
    served: tuple[str, Any, dict[str, Any]],
) -> None:
    """Requests sent together (batched by the server): the corrupt JPEG's and the text
    file's get a 400 naming the input; their batch-mates get their answers."""
    url, _, modules = served
    corrupt = IMAGES[0][:200] + b"\x00" * 50  # a JPEG header, then garbage
    payloads = [[IMAGES[0]], [corrupt], [IMAGES[1], IMAGES[2]], [b"plain text"], [IMAGES[3]]]

    def send(images: list[bytes]) -> Any:
        client = thttp.InferenceServerClient(url.removeprefix("http://"))
        tensor = thttp.InferInput("image", [len(images)], "BYTES")
        tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
        try:
            return client.infer("resnet50", [tensor])
        except InferenceServerException as exc:
            return exc

    with ThreadPoolExecutor(len(payloads)) as pool:
        results = list(pool.map(send, payloads))
    for images, result in zip(payloads, results, strict=True):
        if images in ([corrupt], [b"plain text"]):
            assert isinstance(result, InferenceServerException)
            assert result.status() == "400"
            assert "input 'image' element 0" in result.message()
            continue
        assert not isinstance(result, InferenceServerException), result
        check(modules["resnet50"], images, result.as_numpy("logits"), result.as_numpy("classes"))


def test_json_strings_reach_the_step_and_are_refused_as_images(
    served: tuple[str, Any, dict[str, Any]],
) -> None:
    """BYTES as JSON strings travel too (text is not an image: a 400 with the fix)."""
    url, _, _ = served
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["hi"]}]}
    response = httpx.post(f"{url}/v2/models/resnet50/infer", json=body)
    assert response.status_code == 400
    assert "is not a JPEG or PNG image" in response.json()["error"]


def test_tensors_in_place_of_the_bytes_input_are_refused(
    served: tuple[str, Any, dict[str, Any]],
) -> None:
    url, _, _ = served
    body = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 2], "data": [0.0, 1.0]}]}
    response = httpx.post(f"{url}/v2/models/resnet50/infer", json=body)
    assert response.status_code == 400
    assert "datatype FP32, expected BYTES" in response.json()["error"]


def test_model_without_steps_refuses_bytes_by_its_signature(tmp_path: Path) -> None:
    root = tmp_path / "models"
    pack(
        torch.nn.Linear(3, 2).eval(),
        (torch.randn(2, 3),),
        name="plain",
        repository=root,
        version=1,
        golden_examples=0,
    )
    with running(root) as (url, _):
        body = {"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}
        response = httpx.post(f"{url}/v2/models/plain/infer", json=body)
    assert response.status_code == 400
    assert "has datatype BYTES, expected FP32" in response.json()["error"]
