"""KServe's own V2 clients against a running torchrig server, in a process of their own
(kserve's generated protos and tritonclient's cannot share one: both register
`inference.*` in protobuf's default pool). Usage: kserve_client.py GRPC_ADDRESS REST_URL, or
kserve_client.py --not-ready REST_URL; prints one JSON document with what each call returned."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import grpc
import httpx
import numpy as np
from kserve import (
    InferenceGRPCClient,
    InferenceRESTClient,
    InferInput,
    InferRequest,
    RESTConfig,
)


def ranker_request(binary: bool) -> InferRequest:
    rng = np.random.default_rng(7)
    dense = rng.standard_normal((5, 13)).astype(np.float32)
    sparse = rng.integers(0, 1000, (5, 26)).astype(np.int64)
    inputs = []
    for name, array, datatype in (("dense", dense, "FP32"), ("sparse", sparse, "INT64")):
        tensor = InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return InferRequest(model_name="ranker", infer_inputs=inputs, request_id="k-1")


async def not_ready(url: str) -> dict[str, Any]:
    """KServe's REST health calls against a server that is live but not ready."""
    rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    out: dict[str, Any] = {"live": await rest.is_server_live(url)}
    try:
        out["ready"] = await rest.is_server_ready(url)
    except httpx.HTTPStatusError as exc:
        out["ready_error"] = exc.response.status_code
    await rest.close()
    return out


async def main(address: str, url: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    client = InferenceGRPCClient(address, timeout=30, retries=0)
    out["grpc_live"] = await client.is_server_live()
    out["grpc_ready"] = await client.is_server_ready()
    out["grpc_model_ready"] = await client.is_model_ready("ranker")
    for binary in (False, True):
        response = await client.infer(ranker_request(binary))
        out[f"grpc_infer_{'raw' if binary else 'typed'}"] = {
            "id": response.id,
            "probability": response.outputs[0].as_numpy().tolist(),
        }
    bad = InferRequest(
        model_name="ranker",
        infer_inputs=[InferInput("dense", [1, 12], "FP32", data=[0.0] * 12)],
    )
    try:
        await client.infer(bad)
    except grpc.RpcError as exc:
        out["grpc_error"] = [exc.code().name, exc.details()]
    await client.close()

    rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    out["rest_live"] = await rest.is_server_live(url)
    out["rest_ready"] = await rest.is_server_ready(url)
    out["rest_model_ready"] = await rest.is_model_ready(url, "ranker")
    await rest.close()
    return out


if __name__ == "__main__":
    if sys.argv[1] == "--not-ready":
        print(json.dumps(asyncio.run(not_ready(sys.argv[2]))))
    else:
        print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2]))))
