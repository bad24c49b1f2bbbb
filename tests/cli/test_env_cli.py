"""`torchrig env` end to end: real processes, real lock files, clear errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import msgspec
import pytest

from builders import node
from cli_runs import torchrig
from torchrig.envlock import EnvLock, lock_to_json


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return torchrig(*args, cwd=cwd)


@pytest.fixture(scope="module")
def live_lock(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("locks") / "live.json"
    proc = run("env", "snapshot", "-o", str(path))
    assert proc.returncode == 0, proc.stderr
    return path


def test_snapshot_to_stdout_is_a_stable_lock(live_lock: Path) -> None:
    proc = run("env", "snapshot")
    assert proc.returncode == 0, proc.stderr
    lock = json.loads(proc.stdout)
    assert lock["kind"] == "torchrig-env-lock"
    assert lock["schema_version"] == 1
    names = [p["name"] for p in lock["packages"]]
    assert names == sorted(names)
    assert "torch" in names
    assert "torchrig" in names
    assert list(lock) == sorted(lock)  # sorted keys: diff-friendly


def test_check_against_own_lock_passes(live_lock: Path) -> None:
    proc = run("env", "check", str(live_lock), "--strict")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no breaking or risky drift" in proc.stdout


def test_check_against_a_production_lock_fails_and_explains(tmp_path: Path) -> None:
    prod = tmp_path / "prod.json"
    prod.write_bytes(lock_to_json(EnvLock(torchrig_version="0.1.0", snapshot=node())))
    proc = run("env", "check", str(prod))
    assert proc.returncode == 1, proc.stdout
    assert "BREAKING" in proc.stdout
    assert "can cause:" in proc.stdout
    report = json.loads(run("env", "check", str(prod), "--json").stdout)
    assert report["breaking"] >= 1
    assert report["differences"][0]["severity"] == "breaking"


def test_diff_json_and_exit_codes(live_lock: Path, tmp_path: Path) -> None:
    same = run("env", "diff", str(live_lock), str(live_lock), "--json")
    assert same.returncode == 0
    assert json.loads(same.stdout)["differences"] == []
    lock = msgspec.json.decode(live_lock.read_bytes(), type=EnvLock)
    older = msgspec.structs.replace(
        lock.snapshot, torch=msgspec.structs.replace(lock.snapshot.torch, version="2.9.1+cpu")
    )
    other = tmp_path / "other.json"
    other.write_bytes(lock_to_json(msgspec.structs.replace(lock, snapshot=older)))
    proc = run("env", "diff", str(live_lock), str(other))
    assert proc.returncode == 1
    assert "another minor release" in proc.stdout


def test_doctor_judges_a_lock_file(live_lock: Path) -> None:
    proc = run("doctor", "--from", str(live_lock), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["source"] == str(live_lock)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"kind": "torchrig-env-lock", "schema_version": 1, "snap', "may be truncated"),
        ('{"kind": "torchrig-env-lock", "schema_version": 7}', "schema_version 7"),
        ('{"schema_version": 1, "taken_at": "x"}', "not a torchrig environment lock"),
        (
            '{"kind": "torchrig-env-lock", "schema_version": 1, "torchrig_version": 3}',
            "does not match the lock schema",
        ),
    ],
)
def test_bad_locks_exit_2_with_a_clear_error(
    live_lock: Path, tmp_path: Path, content: str, needle: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    for args in (
        ("diff", str(bad), str(live_lock)),
        ("diff", str(live_lock), str(bad)),
        ("check", str(bad)),
    ):
        proc = run("env", *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert needle in proc.stderr
        assert "Traceback" not in proc.stderr


def test_missing_lock_and_unwritable_output(tmp_path: Path) -> None:
    proc = run("env", "check", str(tmp_path / "absent.json"))
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr
    proc = run("env", "snapshot", "-o", str(tmp_path / "no" / "such" / "dir.json"))
    assert proc.returncode == 2
    assert "cannot write lock" in proc.stderr
    assert "Traceback" not in proc.stderr
