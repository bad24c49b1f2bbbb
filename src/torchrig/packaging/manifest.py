"""The artifact manifest: what a model version is, how to load it, and where it came from.

`<repo>/<model>/<version>/manifest.json` describes the program file, its input and output
signature, every file's checksum, the golden examples, and the exporting environment's
lock (the same fingerprint `torchrig env` uses). A version is complete only when the
manifest is present and every file it lists matches its checksum.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from torchrig.envlock.model import EnvLock
from torchrig.errors import ArtifactError
from torchrig.jsondoc import from_json, to_json

MANIFEST_KIND = "torchrig-model"
MANIFEST_SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"

# "handler": a Python handler (`pack --handler`), run only by a server that allows them;
# "pipeline": what the server describes a pipeline with (never a packed version)
Format = Literal["torch.export", "aoti", "torchscript", "handler", "pipeline"]
PROGRAM_FORMATS = ("torch.export", "aoti", "torchscript")  # what `pack` exports


class TensorSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One named input or output: V2 datatype and shape, -1 for a variable dimension.

    When the model batches, dimension 0 is the batch dimension and is -1.
    """

    name: str
    datatype: str  # V2: "FP32", "INT64", "BF16", ... (torchrig.dtypes)
    shape: list[int]


class DynamicDim(msgspec.Struct, frozen=True, kw_only=True):
    """A declared variable dimension past the batch (`pack --dynamic NAME:DIM:MIN-MAX`):
    the signature shows -1 there; the server refuses sizes outside [min, max] per request
    and warms up (and captures CUDA graphs for) buckets between them."""

    input: str
    dim: int
    min: int
    max: int | None = None  # None: no upper bound was declared


class FileEntry(msgspec.Struct, frozen=True, kw_only=True):
    path: str  # relative to the version directory, "/"-separated
    sha256: str
    size: int


class Tolerance(msgspec.Struct, frozen=True, kw_only=True):
    atol: float
    rtol: float


class GoldenSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Example inputs and the outputs the exporting environment produced for them."""

    file: str  # a torch.save'd dict of tensors, loaded with weights_only=True
    count: int  # number of examples (each a batch of inputs)
    device: str  # where the golden outputs were computed: "cpu", "cuda"
    tolerances: dict[str, Tolerance]  # V2 datatype -> tolerance for outputs of that type


class HandlerSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A Python handler version: its file, the class the server makes, and the sha256 of
    the source it may run (checked on the very bytes it executes). The source is kept
    here too, so reviewing the manifest is reviewing the code that will run."""

    file: str  # "handler.py", relative to the version directory
    class_name: str  # "Handler"
    sha256: str
    source: str


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    kind: str = MANIFEST_KIND
    schema_version: int = MANIFEST_SCHEMA_VERSION
    name: str
    version: int
    format: Format
    program: str  # the program file, relative: "model.pt2", "model.ts"
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    batching: bool = True  # dimension 0 of every input and output is the batch
    max_batch_size: int | None = None  # the export's upper bound for the batch dim, if any
    # inclusive [low, high] of integer inputs (embedding indices...), checked per request
    # before the model sees it: a bad index must not become a device-side assert
    input_ranges: dict[str, list[int]] = {}
    dynamic_dims: list[DynamicDim] = []  # variable dims past the batch, with their ranges
    files: list[FileEntry]  # every file of the version except manifest.json
    golden: GoldenSpec | None = None
    environment: EnvLock | None = None  # the exporting environment's lock
    created_at: str  # ISO 8601 UTC
    torchrig_version: str
    description: str = ""
    # output name -> its class labels, in class-index order (`pack --labels`): the
    # classification extension answers "score:index:label" with them
    labels: dict[str, list[str]] = {}
    handler: HandlerSpec | None = None  # with format "handler"


def manifest_to_json(manifest: Manifest) -> bytes:
    return to_json(manifest)


def manifest_from_json(data: bytes | str, *, origin: str = MANIFEST_FILE) -> Manifest:
    """Parse and validate a manifest; every defect is an `ArtifactError` naming the file."""
    return from_json(
        data,
        Manifest,
        origin=origin,
        what="model manifest",
        schema="manifest",
        schema_version=MANIFEST_SCHEMA_VERSION,
        error=ArtifactError,
        fix="Copy the version again, or re-pack it with `torchrig pack` (this torchrig).",
        kind=MANIFEST_KIND,
    )
