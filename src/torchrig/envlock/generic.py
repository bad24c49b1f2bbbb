"""Everything the rules do not judge, compared key by key as information."""

from __future__ import annotations

from typing import Any

import msgspec

from torchrig.envlock.report import Difference
from torchrig.facts.model import Snapshot

# values that change between any two snapshots of the same environment: not drift
VOLATILE_KEYS = (
    "taken_at",
    "shm.free_bytes",
    "probes",
    ".memory_used_bytes",
)

# lists of records compared by a natural key instead of by position
LIST_KEYS = {"libraries": "name", "library_candidates": "path", "gpus": "index"}


def _flatten(value: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, list):
        natural = LIST_KEYS.get(prefix)
        if value and all(isinstance(v, dict) for v in value):
            for position, item in enumerate(value):
                label = item.get(natural, position) if natural else position
                _flatten(item, f"{prefix}[{label}]", out)
        else:
            out[prefix] = " ".join(str(v) for v in value)
    elif value is not None:
        out[prefix] = str(value)


def flatten(snapshot: Snapshot) -> dict[str, str]:
    out: dict[str, str] = {}
    _flatten(msgspec.to_builtins(snapshot), "", out)
    return out


def _owned(key: str, owned: tuple[str, ...]) -> bool:
    for prefix in owned:
        if key == prefix or key.startswith((prefix + ".", prefix + "[")):
            return True
    return any(key.endswith(v) if v.startswith(".") else key.startswith(v) for v in VOLATILE_KEYS)


def generic_differences(a: Snapshot, b: Snapshot, owned: tuple[str, ...]) -> list[Difference]:
    fa, fb = flatten(a), flatten(b)
    out: list[Difference] = []
    for key in sorted(set(fa) | set(fb)):
        if _owned(key, owned):
            continue
        va, vb = fa.get(key), fb.get(key)
        if va == vb:
            continue
        out.append(
            Difference(
                severity="info",
                key=key,
                a=va,
                b=vb,
                message=f"{key}: {va if va is not None else '-'} → {vb if vb is not None else '-'}",
                consequence="",
            )
        )
    return out
