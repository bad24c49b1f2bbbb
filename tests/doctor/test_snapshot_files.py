"""Every snapshot file in tests/data/snapshots is judged by every check without a crash,
and every warning or failure comes with a fix."""

from __future__ import annotations

import pytest

from snapshot_files import DATA, load
from torchrig.doctor import CHECKS, diagnose

FILES = sorted(path.name for path in DATA.glob("*.json"))


def test_the_snapshot_files_are_found() -> None:
    assert len(FILES) >= 10


@pytest.mark.parametrize("name", FILES)
def test_every_check_judges_every_snapshot_file(name: str) -> None:
    report = diagnose(load(name))
    assert {c.id for c in CHECKS if not c.deep} <= {r.id for r in report.checks}
    ids = {r.id for r in report.checks}
    for res in report.checks:
        assert "the check itself failed" not in res.message, res.message
        if res.status in ("warn", "fail"):
            assert res.fix, f"{name}: {res.id} {res.status} without a fix"
        if res.cause is not None:
            assert res.cause in ids
