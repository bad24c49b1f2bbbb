"""What the load generator sends: shapes from the model's V2 metadata, random data per
datatype, and a small pool of fully encoded HTTP requests built before the run.

Shapes: a metadata dimension of -1 in first place is the batch dimension and takes
`--batch` rows; any other -1 needs `--shape NAME=d1,d2,...`, which gives the dimensions
after the batch dimension (all of them for an input without one), as perf_analyzer does.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import msgspec
import numpy as np

from torchrig.bench.client import Endpoint, encode_request
from torchrig.bench.encode import RequestTensor, encode_infer_request, numpy_dtype
from torchrig.dtypes import V2_TO_TORCH
from torchrig.errors import UsageError

POOL_SIZE = 8  # distinct request bodies, sent in turn
POOL_BYTES = 64 * 1024 * 1024  # ... but no more than this much memory for all of them
INT_HIGH = 100  # random integers are drawn from [0, INT_HIGH): valid embedding indices
BYTES_LENGTH = 16  # characters of a random BYTES element
DATATYPES = frozenset([*V2_TO_TORCH, "BYTES"])


class TensorMetadata(msgspec.Struct, frozen=True):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(msgspec.Struct, frozen=True):
    """The part of `GET /v2/models/{m}` the generator needs (any V2 server's answer)."""

    name: str
    inputs: list[TensorMetadata]
    versions: list[str] | None = None
    platform: str | None = None
    outputs: list[TensorMetadata] = []


def parse_metadata(body: bytes, where: str) -> ModelMetadata:
    """Decode model metadata; a body that is not V2 model metadata is a UsageError."""
    try:
        metadata = msgspec.json.decode(body, type=ModelMetadata)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UsageError(
            f"{where} is not V2 model metadata ({exc}); point URL at a KServe V2 / Triton / "
            "MLServer server"
        ) from None
    if not metadata.inputs:
        raise UsageError(f"{where} lists no inputs; the generator cannot build a request")
    for spec in metadata.inputs:
        if spec.datatype not in DATATYPES:
            raise UsageError(
                f"input {spec.name!r} of model {metadata.name} has datatype {spec.datatype!r}, "
                "which is not a V2 datatype"
            )
    return metadata


@dataclass(frozen=True)
class InputShape:
    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class RequestShapes:
    """The shape of every input of one request, and how many rows the request carries."""

    inputs: list[InputShape]
    rows: int


def parse_shape_option(values: tuple[str, ...]) -> dict[str, list[int]]:
    """`("dense=13", "image=3,224,224")` -> {name: dims}; a malformed one is a UsageError."""
    shapes: dict[str, list[int]] = {}
    for value in values:
        name, sep, dims = value.partition("=")
        try:
            parsed = [int(d) for d in dims.split(",")] if dims.strip() else []
        except ValueError:
            parsed = [-1]
        if not sep or not name or any(d < 0 for d in parsed):
            raise UsageError(
                f"--shape {value!r}: write NAME=d1,d2,... with sizes >= 0, "
                "e.g. --shape image=3,224,224"
            )
        shapes[name] = parsed
    return shapes


def resolve_shapes(
    metadata: ModelMetadata, batch: int | None, overrides: dict[str, list[int]]
) -> RequestShapes:
    """Fill every -1: the leading one from `batch`, the others from `overrides`."""
    names = [spec.name for spec in metadata.inputs]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise UsageError(
            f"--shape names {', '.join(unknown)}, which model {metadata.name} does not take; "
            f"its inputs are {', '.join(names)}"
        )
    batched = any(spec.shape[:1] == [-1] for spec in metadata.inputs)
    if batch is not None and batch != 1 and not batched:
        raise UsageError(
            f"--batch {batch}: model {metadata.name} has no batch dimension (no input shape "
            "starts with -1); drop --batch"
        )
    rows = batch if batch is not None else 1
    resolved: list[InputShape] = []
    for spec in metadata.inputs:
        has_batch = spec.shape[:1] == [-1]
        rest = spec.shape[1:] if has_batch else spec.shape
        given = overrides.get(spec.name)
        if given is not None:
            if len(given) != len(rest) or any(
                m not in (-1, g) for m, g in zip(rest, given, strict=True)
            ):
                after = "the dims after the batch dimension" if has_batch else "all its dims"
                raise UsageError(
                    f"--shape {spec.name}={','.join(map(str, given))} does not fit input "
                    f"{spec.name!r} of shape {spec.shape}: give {after}, "
                    f"e.g. --shape {spec.name}={_example(rest)}"
                )
            rest = given
        elif any(d < 0 for d in rest):
            raise UsageError(
                f"input {spec.name!r} of model {metadata.name} has shape {spec.shape}, with a "
                f"size the metadata leaves open: give it with --shape {spec.name}={_example(rest)}"
                + (" (the dims after the batch dimension)" if has_batch else "")
            )
        resolved.append(
            InputShape(spec.name, spec.datatype, tuple(([rows] if has_batch else []) + rest))
        )
    return RequestShapes(resolved, rows if batched else 1)


def _example(dims: list[int]) -> str:
    return ",".join(str(d) if d >= 0 else "16" for d in dims) or "''"


def random_tensor(spec: InputShape, rng: np.random.Generator) -> RequestTensor:
    """Random data of the input's datatype: normal floats, integers in [0, INT_HIGH),
    random booleans, or ASCII strings for BYTES."""
    shape, datatype = spec.shape, spec.datatype
    if datatype == "BYTES":
        count = int(np.prod(shape))
        letters = rng.integers(ord("a"), ord("z") + 1, (count, BYTES_LENGTH), dtype=np.uint8)
        return RequestTensor(spec.name, datatype, shape, [row.tobytes() for row in letters])
    if datatype == "BOOL":
        data = rng.integers(0, 2, shape, dtype=np.uint8).astype(np.bool_)
    elif datatype == "BF16":  # the upper half of float32 bits is a bfloat16
        floats = rng.standard_normal(shape, dtype=np.float32)
        data = (floats.view(np.uint32) >> 16).astype(np.uint16)
    elif datatype.startswith("FP"):
        data = rng.standard_normal(shape).astype(numpy_dtype(datatype))
    else:
        dtype = numpy_dtype(datatype)
        high = min(INT_HIGH, int(np.iinfo(dtype).max) + 1)
        data = rng.integers(0, high, shape).astype(dtype)
    return RequestTensor(spec.name, datatype, shape, data)


def infer_path(model: str, version: str | None) -> str:
    path = f"/v2/models/{quote(model, safe='')}"
    if version is not None:
        path += f"/versions/{quote(version, safe='')}"
    return path + "/infer"


def build_pool(
    endpoint: Endpoint,
    path: str,
    shapes: RequestShapes,
    *,
    binary: bool,
    seed: int = 0,
) -> list[bytes]:
    """Encoded HTTP requests with random data, so the run itself never encodes anything.

    BF16 in JSON is a UsageError naming the input and the fix (--binary).
    """
    rng = np.random.default_rng(seed)
    pool: list[bytes] = []
    total = 0
    for index in range(POOL_SIZE):
        tensors = [random_tensor(spec, rng) for spec in shapes.inputs]
        try:
            encoded = encode_infer_request(tensors, binary=binary, request_id=str(index))
        except ValueError as exc:
            raise UsageError(f"{exc} (use --binary)") from None
        raw = encode_request(endpoint, "POST", path, encoded.body, encoded.headers)
        if pool and total + len(raw) > POOL_BYTES:
            break
        pool.append(raw)
        total += len(raw)
    return pool
