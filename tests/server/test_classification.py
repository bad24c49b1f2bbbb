"""The classification extension through tritonclient's HTTP and gRPC clients: the top K of
each row as "score:index:label", labels packed with the model, the same on both transports
and equal to the in-process model's top K."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tritonclient import grpc as tgrpc
from tritonclient import http as thttp
from tritonclient.utils import InferenceServerException

from serving import running
from torchrig.errors import PackError
from torchrig.packaging import pack

LABELS = ["cat", "dog", "fish", "bird", "frog"]


class Scores(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any, Any]]:
    torch.manual_seed(0)
    module = Scores().eval()
    root = tmp_path_factory.mktemp("classes") / "models"
    pack(
        module,
        (torch.randn(2, 4),),
        name="scores",
        repository=root,
        version=1,
        output_names=["logits"],
        labels={"": LABELS},
    )
    with running(root) as (url, state):
        yield url, state, module


def expected(module: Any, x: np.ndarray, k: int) -> list[list[bytes]]:
    with torch.no_grad():
        top = torch.topk(module(torch.from_numpy(x)).double(), k, dim=1)
    return [
        [f"{s:f}:{i}:{LABELS[i]}".encode() for s, i in zip(scores, indices, strict=True)]
        for scores, indices in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]


@pytest.mark.parametrize("binary", [True, False])
def test_http_class_count(classifier: tuple[str, Any, Any], binary: bool) -> None:
    url, _, module = classifier
    client = thttp.InferenceServerClient(url.removeprefix("http://"))
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    tensor = thttp.InferInput("x", [3, 4], "FP32")
    tensor.set_data_from_numpy(x)
    output = thttp.InferRequestedOutput("logits", binary_data=binary, class_count=3)
    got = client.infer("scores", [tensor], outputs=[output]).as_numpy("logits")
    assert got.shape == (3, 3)
    assert [[bytes(v) if not isinstance(v, str) else v.encode() for v in row] for row in got] == (
        expected(module, x, 3)
    )


def test_grpc_class_count_equals_http(classifier: tuple[str, Any, Any]) -> None:
    _, state, module = classifier
    client = tgrpc.InferenceServerClient(state.grpc_address)
    x = np.random.default_rng(2).standard_normal((2, 4)).astype(np.float32)
    tensor = tgrpc.InferInput("x", [2, 4], "FP32")
    tensor.set_data_from_numpy(x)
    got = client.infer(
        "scores", [tensor], outputs=[tgrpc.InferRequestedOutput("logits", class_count=9)]
    ).as_numpy("logits")
    assert got.shape == (2, 5)  # at most as many classes as the model has
    assert got.tolist() == expected(module, x, 5)
    bad = tgrpc.InferRequestedOutput("logits", class_count=-1)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("scores", [tensor], outputs=[bad])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_labels_must_name_an_output(tmp_path: Path) -> None:
    with pytest.raises(PackError, match="labels for output 'nope'"):
        pack(
            Scores(),
            (torch.randn(2, 4),),
            name="scores",
            repository=tmp_path / "models",
            output_names=["logits"],
            golden_examples=0,
            labels={"nope": LABELS},
        )
