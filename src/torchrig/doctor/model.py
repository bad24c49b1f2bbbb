"""What the doctor reports: one result per check (and subject), and the verdict.

`Report` is also the documented `--json` output; its JSON Schema is printed by
`torchrig doctor --json-schema`. Bump `REPORT_SCHEMA_VERSION` on incompatible change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import msgspec

from torchrig.facts.model import Snapshot

REPORT_SCHEMA_VERSION = 1

Status = Literal["ok", "warn", "fail", "skip"]

# exit codes of `torchrig doctor`
EXIT_OK = 0
EXIT_WARN = 1  # only with --strict
EXIT_FAIL = 2


class CheckResult(msgspec.Struct, frozen=True, kw_only=True):
    """The verdict of one check on one subject (the machine, a GPU, a library)."""

    id: str  # stable check id, e.g. "gpu.arch"; documented in the README
    status: Status
    message: str  # what was found, with the numbers
    fix: str | None = None  # what to do, when status is warn or fail
    subject: str | None = None  # "gpu0", "gpu0-7", "libcudnn"; None: the whole machine
    # the id of the more specific check that found the cause of this failure, if any
    cause: str | None = None


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    ok: int
    warn: int
    fail: int
    skip: int


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """The doctor's full answer; `--json` prints exactly this."""

    schema_version: int = REPORT_SCHEMA_VERSION
    torchrig_version: str
    hostname: str | None
    snapshot_taken_at: str
    source: str  # "live" or the path given to --from
    deep: bool  # whether probe results were judged
    verdict: Literal["ok", "warn", "fail"]
    exit_code: int
    summary: Summary
    checks: list[CheckResult]


@dataclass(frozen=True)
class CheckContext:
    """Everything a check may look at: the snapshot and the judging options."""

    snapshot: Snapshot
    require_gpu: bool = False
    min_shm_bytes: int = 1024 * 1024 * 1024


CheckFunc = Callable[[CheckContext], list[CheckResult]]


@dataclass(frozen=True)
class Check:
    """A registered check: a stable id, a one-line description for the docs, the function."""

    id: str
    description: str
    func: CheckFunc
    deep: bool = False  # judges --deep probe results
    facts: tuple[str, ...] = ()  # the snapshot fields it reads (for --explain)
    sources: tuple[str, ...] = ()  # knowledge behind its rules: data files, torch source, docs
