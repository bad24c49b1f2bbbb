"""Load the hand-written snapshot files of tests/data/snapshots and look up results."""

from __future__ import annotations

from pathlib import Path

from torchrig.doctor.model import CheckResult, Report
from torchrig.facts.model import Snapshot, snapshot_from_json

DATA = Path(__file__).resolve().parent / "data" / "snapshots"


def load(name: str) -> Snapshot:
    path = DATA / name
    return snapshot_from_json(path.read_bytes(), origin=str(path))


def results(report: Report, check_id: str) -> list[CheckResult]:
    found = [r for r in report.checks if r.id == check_id]
    assert found, f"no result for {check_id}"
    return found


def one(report: Report, check_id: str) -> CheckResult:
    (found,) = results(report, check_id)
    return found


def problems(report: Report) -> list[str]:
    return [
        f"{r.id}: {r.status}: {r.message}" for r in report.checks if r.status in ("warn", "fail")
    ]
