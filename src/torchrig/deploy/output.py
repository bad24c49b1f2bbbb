"""Manifests as YAML: dumped from data (so always valid YAML), on stdout or as files."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from torchrig.errors import UsageError

KUSTOMIZATION = "kustomization.yaml"


class _Dumper(yaml.SafeDumper):
    """Safe YAML with multi-line strings as literal blocks (a dashboard, a PromQL query)."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(docs: Iterable[Mapping[str, Any]]) -> str:
    """The documents as one multi-document YAML stream, keys in the order given."""
    return "---\n".join(
        yaml.dump(dict(doc), Dumper=_Dumper, sort_keys=False, width=1 << 16) for doc in docs
    )


def manifest_files(docs: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """One file per object, named by kind: `deployment.yaml`, `service.yaml`, ..., and the
    `kustomization.yaml` that lists them."""
    files: dict[str, str] = {}
    for doc in docs:
        name = f"{str(doc['kind']).lower()}.yaml"
        if name in files:  # pragma: no cover - each renderer emits one object per kind
            raise ValueError(f"two objects of kind {doc['kind']}")
        files[name] = to_yaml([doc])
    files[KUSTOMIZATION] = kustomization(files)
    return files


def kustomization(files: Iterable[str]) -> str:
    """A `kustomization.yaml` listing the manifest files: teams overlay it rather than edit."""
    doc = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": sorted(name for name in files if name != KUSTOMIZATION),
    }
    return to_yaml([doc])


def write_files(directory: Path, files: Mapping[str, str]) -> list[Path]:
    """Write `files` (name -> content) into `directory`, creating it; the paths written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"-o {directory} is a file: give a directory") from None
    except OSError as exc:
        raise UsageError(f"cannot create {directory}: {exc.strerror}") from None
    written = []
    for name, text in files.items():
        path = directory / name
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror}") from None
        written.append(path)
    return written
