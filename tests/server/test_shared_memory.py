"""The system shared-memory extension through tritonclient: regions made with
tritonclient.utils.shared_memory, registered over gRPC, inputs read from one and outputs
written into another; sizes and offsets checked; regions of another user refused."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.utils.shared_memory as shm
from tritonclient import grpc as tgrpc
from tritonclient import http as thttp
from tritonclient.utils import InferenceServerException

from ranker_data import in_process, ranker_arrays

ROWS = 4
DENSE, SPARSE, OUT = ROWS * 13 * 4, ROWS * 26 * 8, ROWS * 4


@pytest.fixture
def regions() -> Iterator[dict[str, Any]]:
    tag = secrets.token_hex(4)
    made = {
        "in": shm.create_shared_memory_region(f"in{tag}", f"/torchrig_in_{tag}", DENSE + SPARSE),
        "out": shm.create_shared_memory_region(f"out{tag}", f"/torchrig_out_{tag}", OUT),
    }
    made["tag"] = tag
    yield made
    for key in ("in", "out"):
        shm.destroy_shared_memory_region(made[key])


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_round_trip(
    server: tuple[str, Any], demo_repo: Any, regions: dict[str, Any], transport: str
) -> None:
    url, state = server
    module: Any = tgrpc if transport == "grpc" else thttp
    if transport == "grpc":
        client = tgrpc.InferenceServerClient(state.grpc_address)
    else:
        client = thttp.InferenceServerClient(url.removeprefix("http://"))
    tag = regions["tag"]
    arrays = ranker_arrays(rows=ROWS)
    shm.set_shared_memory_region(regions["in"], [arrays["dense"], arrays["sparse"]])
    client.register_system_shared_memory(f"in{tag}", f"/torchrig_in_{tag}", DENSE + SPARSE)
    client.register_system_shared_memory(f"out{tag}", f"/torchrig_out_{tag}", OUT)
    try:
        assert sizes(client, transport)[f"in{tag}"] == DENSE + SPARSE
        dense = module.InferInput("dense", [ROWS, 13], "FP32")
        dense.set_shared_memory(f"in{tag}", DENSE)
        sparse = module.InferInput("sparse", [ROWS, 26], "INT64")
        sparse.set_shared_memory(f"in{tag}", SPARSE, offset=DENSE)
        output = module.InferRequestedOutput("probability")
        output.set_shared_memory(f"out{tag}", OUT)
        result = client.infer("ranker", [dense, sparse], outputs=[output])
        answer = result.get_output("probability")
        if transport == "grpc":
            assert answer.parameters["shared_memory_region"].string_param == f"out{tag}"
        else:
            assert answer["parameters"]["shared_memory_region"] == f"out{tag}"
        got = shm.get_contents_as_numpy(regions["out"], np.float32, [ROWS, 1])
        np.testing.assert_allclose(got, in_process(demo_repo, "ranker", arrays), rtol=1e-6)

        beyond = module.InferInput("dense", [ROWS, 13], "FP32")
        beyond.set_shared_memory(f"in{tag}", DENSE, offset=SPARSE + 8)  # past the region
        with pytest.raises(InferenceServerException) as caught:
            client.infer("ranker", [beyond, sparse])
        assert caught.value.status() in ("StatusCode.INVALID_ARGUMENT", "400")
        assert "exceeds" in caught.value.message()
        small = module.InferRequestedOutput("probability")
        small.set_shared_memory(f"out{tag}", OUT // 2)
        with pytest.raises(InferenceServerException) as caught:
            client.infer("ranker", [dense, sparse], outputs=[small])
        assert caught.value.status() in ("StatusCode.INVALID_ARGUMENT", "400")
        with pytest.raises(InferenceServerException) as caught:
            client.register_system_shared_memory(f"in{tag}", f"/torchrig_in_{tag}", 8)
        assert "registered already" in caught.value.message()
    finally:
        client.unregister_system_shared_memory(f"in{tag}")
        client.unregister_system_shared_memory(f"out{tag}")
    assert sizes(client, transport) == {}
    unknown = module.InferInput("dense", [ROWS, 13], "FP32")
    unknown.set_shared_memory(f"in{tag}", DENSE)
    with pytest.raises(InferenceServerException, match="no shared-memory region"):
        client.infer("ranker", [unknown, sparse])


def sizes(client: Any, transport: str) -> dict[str, int]:
    """The registered regions' sizes, as each client reports them."""
    if transport == "grpc":
        regions = client.get_system_shared_memory_status(as_json=True).get("regions", {})
        return {name: int(region["byte_size"]) for name, region in regions.items()}
    return {r["name"]: r["byte_size"] for r in client.get_system_shared_memory_status()}


def test_bad_keys_and_other_users_regions(server: tuple[str, Any]) -> None:
    _, state = server
    client = tgrpc.InferenceServerClient(state.grpc_address)
    for key in ("/../etc/passwd", "/nope_" + secrets.token_hex(4), "a/b"):
        with pytest.raises(InferenceServerException) as caught:
            client.register_system_shared_memory("bad", key, 8)
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT", key
    if os.geteuid() != 0:
        pytest.skip("giving a region to another user needs root; the owner check ran above")
    tag = secrets.token_hex(4)
    handle = shm.create_shared_memory_region(f"o{tag}", f"/torchrig_other_{tag}", 64)
    try:
        os.chown(f"/dev/shm/torchrig_other_{tag}", 12345, 12345)
        with pytest.raises(InferenceServerException) as caught:
            client.register_system_shared_memory(f"o{tag}", f"/torchrig_other_{tag}", 64)
        assert caught.value.status() == "StatusCode.PERMISSION_DENIED"
        assert "another user" in caught.value.message()
    finally:
        shm.destroy_shared_memory_region(handle)


def test_inputs_are_read_in_place_and_outputs_written_from_tensor_memory() -> None:
    """The server maps a region once: inputs are views of it (integers, which a model may
    index with, are copied), and an output's array is written without a bytes copy."""
    from torchrig.protocol.shared_memory import private_copy
    from torchrig.server.shm import SharedMemory

    tag = secrets.token_hex(4)
    region = shm.create_shared_memory_region(f"view{tag}", f"/view_{tag}", 64)
    shared = SharedMemory()
    try:
        shared.register("view", f"/view_{tag}", 0, 64, os.getuid())
        shm.set_shared_memory_region(region, [np.arange(16, dtype=np.float32)])
        pixels = shared.read("view", 0, 16, uid=os.getuid(), what="input")
        assert private_copy("UINT8", pixels) is pixels
        indices = private_copy("INT64", pixels)
        assert indices is not pixels
        shm.set_shared_memory_region(region, [np.full(16, 7, dtype=np.float32)])
        assert pixels.view(np.float32)[0] == 7.0  # the client's memory, not a copy
        assert indices.view(np.float32)[0] == 0.0
        written = shared.write(
            "view", 16, 32, np.array([1.5, 2.5], np.float32), uid=os.getuid(), what="output"
        )
        assert written == 8
        got = shm.get_contents_as_numpy(region, np.float32, [16])
        assert got[4:6].tolist() == [1.5, 2.5]
    finally:
        shared.close()
        shm.destroy_shared_memory_region(region)
