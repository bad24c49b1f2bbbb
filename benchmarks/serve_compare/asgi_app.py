"""The ceiling: a bare ASGI callable, no framework and no batching.

Each POST is a V2 JSON infer request for the ranker, decoded with msgspec, run alone
under torch.inference_mode() on the event loop, and answered with a V2 JSON response.
Any GET answers 200 (the readiness probe). Run:
`uvicorn asgi_app:app --http httptools --loop uvloop --lifespan off --no-access-log`.
"""

from __future__ import annotations

from typing import Any

import msgspec
import torch
from ranker_model import load_ranker

DTYPES = {"FP32": torch.float32, "INT64": torch.int64}


class Tensor(msgspec.Struct):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class Request(msgspec.Struct):
    inputs: list[Tensor]


MODEL = load_ranker()
DECODER = msgspec.json.Decoder(Request)
ENCODER = msgspec.json.Encoder()


def infer(body: bytes) -> bytes:
    request = DECODER.decode(body)
    tensors = {
        t.name: torch.tensor(t.data, dtype=DTYPES[t.datatype]).reshape(t.shape)
        for t in request.inputs
    }
    with torch.inference_mode():
        out = MODEL(tensors["dense"], tensors["sparse"])
    return ENCODER.encode(
        {
            "model_name": "ranker",
            "outputs": [
                {
                    "name": "probability",
                    "datatype": "FP32",
                    "shape": list(out.shape),
                    "data": out.flatten().tolist(),
                }
            ],
        }
    )


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["method"] != "POST":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    chunks: list[bytes] = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    try:
        status, payload = 200, infer(b"".join(chunks))
    except (msgspec.ValidationError, msgspec.DecodeError, KeyError, RuntimeError) as exc:
        status, payload = 400, ENCODER.encode({"error": str(exc)})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
