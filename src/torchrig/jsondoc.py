"""Versioned JSON documents: the facts snapshot, the env lock, the model manifest, and the
data files shipped in the package (the compat knowledge base, the image data).

One way to write them (stable: sorted keys, two-space indent, trailing newline, so they
diff well) and one way to read them back, where every defect -- not JSON, not this kind
of document, another schema version, a field of the wrong type -- is an error that names
the file and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import msgspec

from torchrig.errors import TorchrigError

T = TypeVar("T")


def to_json(value: Any) -> bytes:
    """Stable, diff-friendly JSON of a Struct (or any msgspec-encodable value)."""
    raw = msgspec.json.encode(value, order="sorted")
    return msgspec.json.format(raw, indent=2) + b"\n"


def from_json(
    data: bytes | str,
    target: type[T],
    *,
    origin: str,
    what: str,
    schema: str,
    schema_version: int,
    error: type[TorchrigError],
    fix: str,
    kind: str | None = None,
) -> T:
    """Decode and validate a document of type `target`.

    `what` names the document for people ("environment lock"), `schema` its schema
    ("lock"), `kind` the value its "kind" field must hold (None: no kind field), and
    `fix` says how to get a good one; `error` is the class raised.
    """
    try:
        head = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise error(
            f"{origin} is not valid JSON ({exc}); it may be truncated or half-written. {fix}"
        ) from None
    if not isinstance(head, dict) or (kind is not None and head.get("kind") != kind):
        expected = f'no "kind": "{kind}"' if kind is not None else "a JSON object is expected"
        raise error(f"{origin} is not a torchrig {what} ({expected}). {fix}")
    version = head.get("schema_version")
    if version != schema_version:
        raise error(
            f"{origin} has {schema} schema_version {version!r}; this torchrig reads schema "
            f"{schema_version}. {fix}"
        )
    try:
        return msgspec.convert(head, type=target)
    except msgspec.ValidationError as exc:
        raise error(f"{origin} does not match the {schema} schema: {exc}. {fix}") from None


def read_file(path: Path, what: str, error: type[TorchrigError]) -> bytes:
    """A document file's bytes; a missing or unreadable file is `error` naming the path."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist.") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a directory; give the JSON file.") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}.") from None


def package_data(package: str, name: str, target: type[T], *, schema_version: int) -> T:
    """A data file shipped in `package`/data/, decoded and schema-checked.

    A defect here is a packaging bug, not user input: it raises `KnowledgeBaseError`.
    """
    from importlib import resources

    from torchrig.errors import KnowledgeBaseError

    label = f"{package}/data/{name}"
    try:
        raw = resources.files(package).joinpath("data").joinpath(name).read_bytes()
        data = msgspec.json.decode(raw, type=target)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise KnowledgeBaseError(f"data file {label} is unreadable: {exc}") from exc
    version = getattr(data, "schema_version", None)
    if version != schema_version:
        raise KnowledgeBaseError(
            f"data file {label} has schema_version {version}, expected {schema_version}"
        )
    return data
