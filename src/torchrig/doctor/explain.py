"""`torchrig doctor --explain CHECK_ID`: what a check judges, the facts it reads, and the
sources behind its rules, down to each knowledge-base file and known error text."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import msgspec

from torchrig.doctor.cuda_errors import KNOWN_ERRORS
from torchrig.doctor.model import Check
from torchrig.doctor.registry import CHECKS
from torchrig.errors import UsageError


class SourceNote(msgspec.Struct, frozen=True, kw_only=True):
    """One piece of knowledge a rule rests on."""

    name: str  # "torch_releases.json", "torch-driver-too-old", or a document
    source: str
    detail: str = ""  # "updated 2026-11-30; 41 entries, 9 not verified"
    verified: bool | None = None


class Explanation(msgspec.Struct, frozen=True, kw_only=True):
    """The answer of `--explain`, also printed as JSON with `--json`."""

    id: str
    judges: str
    deep: bool
    facts: list[str]
    sources: list[SourceNote]


def _entries(value: Any) -> list[dict[str, Any]]:
    """Every JSON object with a `source` field, at any depth."""
    found: list[dict[str, Any]] = []
    if isinstance(value, dict):
        if "source" in value and "verified" in value:
            found.append(value)
        for item in value.values():
            found.extend(_entries(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(_entries(item))
    return found


def _data_file(name: str) -> SourceNote:
    text = resources.files("torchrig.compat").joinpath("data").joinpath(name).read_text()
    data = json.loads(text)
    entries = _entries(data)
    unverified = sum(1 for e in entries if not e.get("verified"))
    sources = sorted({str(e["source"]) for e in entries})
    shown = "; ".join(sources[:4]) + (f"; and {len(sources) - 4} more" if len(sources) > 4 else "")
    return SourceNote(
        name=f"torchrig/compat/data/{name}",
        source=shown or str(data.get("description", "")),
        detail=f"updated {data.get('updated')}; {len(entries)} entries, {unverified} with "
        "verified: false",
    )


def _errors() -> list[SourceNote]:
    return [
        SourceNote(
            name=f"error {known.key}",
            source=known.source,
            detail=f"matches /{known.patterns[0]}/; cause checks: "
            + (", ".join(known.related_checks) or "none"),
            verified=known.verified,
        )
        for known in KNOWN_ERRORS
    ]


def _find(check_id: str) -> Check:
    for check in CHECKS:
        if check.id == check_id:
            return check
    known = ", ".join(c.id for c in CHECKS)
    raise UsageError(f"unknown check id {check_id!r}; the doctor's checks are: {known}.")


def explain_check(check_id: str) -> Explanation:
    """The explanation of one check; an unknown id is a UsageError listing the known ones."""
    check = _find(check_id.strip())
    sources: list[SourceNote] = []
    for source in check.sources:
        kind, _, name = source.partition(":")
        if kind == "data" and name:
            sources.append(_data_file(name))
        elif kind == "errors" and name:
            sources.extend(_errors())
        else:
            sources.append(SourceNote(name="document", source=source))
    return Explanation(
        id=check.id,
        judges=check.description,
        deep=check.deep,
        facts=list(check.facts),
        sources=sources,
    )
