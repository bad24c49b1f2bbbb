"""A text classifier served from strings: a small hand-written encoder (random weights)
packed with a tokenizer.json trained here with Hugging Face `tokenizers` (`pack --file`),
and a text step in config.toml (padding to the batch's longest, or to buckets, with an
attention mask). Strings of different lengths sent together get what the in-process
model answers for each string alone, on REST and gRPC."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from tritonclient import grpc as tgrpc
from tritonclient import http as thttp
from tritonclient.grpc import service_pb2, service_pb2_grpc

from serving import running
from torchrig.packaging import pack

SENTENCES = [
    "the camera saw a red car on the bridge",
    "a dog runs across the field in the rain",
    "traffic is slow near the station this morning",
    "the model answers questions about video frames",
]
VOCAB = 64
MAX_LENGTH = 32


class TinyEncoder(torch.nn.Module):
    """Embeddings, two self-attention blocks that ignore padding, masked mean pooling,
    three classes."""

    def __init__(self, vocab: int = VOCAB, width: int = 32) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.position = torch.nn.Parameter(torch.randn(MAX_LENGTH, width) * 0.1)
        self.qkv = torch.nn.ModuleList([torch.nn.Linear(width, 3 * width) for _ in range(2)])
        self.ffn = torch.nn.ModuleList([torch.nn.Linear(width, width) for _ in range(2)])
        self.norm = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        x = self.embed(input_ids) + self.position[:length]
        keep = attention_mask.to(x.dtype)  # [n, length]
        blocked = (1.0 - keep)[:, None, :] * -1e9  # no attention to padding
        for qkv, ffn in zip(self.qkv, self.ffn, strict=True):
            q, k, v = qkv(x).chunk(3, dim=-1)
            scores = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]) + blocked
            x = self.norm(x + torch.softmax(scores, dim=-1) @ v)
            x = x + torch.relu(ffn(x))
        pooled = (x * keep[:, :, None]).sum(1) / keep.sum(1, keepdim=True)
        return self.head(pooled)


def make_tokenizer(path: Path) -> Tokenizer:
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=VOCAB, special_tokens=["[PAD]", "[UNK]"])
    tokenizer.train_from_iterator(SENTENCES, trainer)
    tokenizer.save(str(path))
    return tokenizer


TEXTS = [
    "red car",
    "the dog runs across the field near the station this morning in the rain",
    "video",
    "a camera on the bridge saw traffic",
]

CONFIGS = {
    "longest": 'device = "cpu"\n\n[[preprocess]]\nstep = "text"\n',
    "buckets": 'device = "cpu"\n\n[[preprocess]]\nstep = "text"\nbuckets = [4, 8, 16, 32]\n',
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any, Any, Any]]:
    torch.manual_seed(0)
    work = tmp_path_factory.mktemp("text")
    tokenizer = make_tokenizer(work / "tokenizer.json")
    module = TinyEncoder().eval()
    root = work / "models"
    ids = torch.randint(2, VOCAB, (2, 8))
    for name, config in CONFIGS.items():
        pack(
            module,
            {"input_ids": ids, "attention_mask": torch.ones(2, 8, dtype=torch.int64)},
            name=name,
            repository=root,
            version=1,
            golden_examples=0,
            output_names=["logits"],
            input_ranges={"input_ids": (0, VOCAB - 1)},
            dynamic_dims={
                "input_ids": {1: (1, MAX_LENGTH)},
                "attention_mask": {1: (1, MAX_LENGTH)},
            },
            files=[work / "tokenizer.json"],
        )
        (root / name / "config.toml").write_text(config)
    with running(root) as (url, state):
        yield url, state, module, tokenizer


def alone(module: Any, tokenizer: Tokenizer, text: str) -> np.ndarray:
    """The in-process model on one string, unpadded."""
    ids = torch.tensor([tokenizer.encode(text).ids])
    with torch.no_grad():
        return module(ids, torch.ones_like(ids)).numpy()[0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("model", list(CONFIGS))
def test_strings_of_different_lengths_equal_each_alone_rest(
    served: tuple[str, Any, Any, Any], model: str
) -> None:
    url, _, module, tokenizer = served
    client = thttp.InferenceServerClient(url.removeprefix("http://"))
    tensor = thttp.InferInput("text", [len(TEXTS)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=np.object_))
    got = client.infer(model, [tensor]).as_numpy("logits")
    for row, text in enumerate(TEXTS):
        np.testing.assert_allclose(got[row], alone(module, tokenizer, text), rtol=1e-4, atol=1e-5)


def test_json_strings_and_grpc_equal_each_alone(served: tuple[str, Any, Any, Any]) -> None:
    url, state, module, tokenizer = served
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": TEXTS[:2]}]}
    answer = httpx.post(f"{url}/v2/models/longest/infer", json=body).json()
    logits = np.array(answer["outputs"][0]["data"], dtype=np.float32).reshape(2, 3)
    client = tgrpc.InferenceServerClient(state.grpc_address)
    tensor = tgrpc.InferInput("text", [2], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in TEXTS[2:]], dtype=np.object_))
    grpc_logits = client.infer("buckets", [tensor]).as_numpy("logits")
    for row, text in enumerate(TEXTS[:2]):
        np.testing.assert_allclose(
            logits[row], alone(module, tokenizer, text), rtol=1e-4, atol=1e-5
        )
    for row, text in enumerate(TEXTS[2:]):
        np.testing.assert_allclose(
            grpc_logits[row], alone(module, tokenizer, text), rtol=1e-4, atol=1e-5
        )


def test_metadata_shows_the_text_input(served: tuple[str, Any, Any, Any]) -> None:
    url, _, _, _ = served
    meta = httpx.get(f"{url}/v2/models/buckets").json()
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 3]}]


def test_text_longer_than_the_declared_range_is_truncated(
    served: tuple[str, Any, Any, Any],
) -> None:
    """The packed length range (1-32) bounds the tokens: a longer text is cut to 32, as
    the in-process model sees its first 32 tokens."""
    url, _, module, tokenizer = served
    text = " ".join(SENTENCES)  # more than 32 words
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]}]}
    answer = httpx.post(f"{url}/v2/models/longest/infer", json=body)
    assert answer.status_code == 200, answer.text
    ids = torch.tensor([tokenizer.encode(text).ids[:MAX_LENGTH]])
    with torch.no_grad():
        want = module(ids, torch.ones_like(ids)).numpy()[0]
    np.testing.assert_allclose(answer.json()["outputs"][0]["data"], want, rtol=1e-4, atol=1e-5)


def test_not_utf8_is_a_400_naming_the_element(served: tuple[str, Any, Any, Any]) -> None:
    url, _, _, _ = served
    client = thttp.InferenceServerClient(url.removeprefix("http://"))
    tensor = thttp.InferInput("text", [2], "BYTES")
    tensor.set_data_from_numpy(np.array([b"red car", b"\xff\xfe"], dtype=np.object_))
    with pytest.raises(Exception, match="element 1 is not UTF-8 text"):
        client.infer("longest", [tensor])


def test_grpc_bytes_contents_equal_each_alone(served: tuple[str, Any, Any, Any]) -> None:
    """Strings in the message's typed `bytes_contents` (not raw contents) work too."""
    _, state, module, tokenizer = served
    request = service_pb2.ModelInferRequest(model_name="longest")
    text = request.inputs.add(name="text", datatype="BYTES", shape=[len(TEXTS)])
    text.contents.bytes_contents.extend(t.encode() for t in TEXTS)
    channel = grpc.insecure_channel(state.grpc_address)
    try:
        answer = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    finally:
        channel.close()
    [output] = answer.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("logits", "FP32", [4, 3])
    logits = np.frombuffer(answer.raw_output_contents[0], dtype=np.float32).reshape(4, 3)
    for row, value in enumerate(TEXTS):
        np.testing.assert_allclose(
            logits[row], alone(module, tokenizer, value), rtol=1e-4, atol=1e-5
        )
