"""`torchrig verify` on a real demo repository: pass, golden mismatch (1), bad input (2)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from cli_runs import torchrig
from torchrig.demo import build_demo_repository
from torchrig.packaging.files import sha256_of


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return torchrig("verify", *args, env={"COLUMNS": "160"}, timeout_s=240)


@pytest.fixture(scope="module")
def demo_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_repository(tmp_path_factory.mktemp("demo") / "repo")


@pytest.fixture
def repo_copy(demo_repo: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(demo_repo, tmp_path / "repo"))


def test_the_demo_repository_passes(demo_repo: Path) -> None:
    proc = run(str(demo_repo))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ranker/1: passed" in proc.stdout
    assert "classifier/1: passed" in proc.stdout
    assert "probability" in proc.stdout
    assert "logits" in proc.stdout


def test_json_for_one_model(demo_repo: Path) -> None:
    proc = run(str(demo_repo / "ranker"), "--json")
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(proc.stdout)
    assert result["status"] == "passed"
    assert result["report"]["outputs"][0]["name"] == "probability"


def test_a_perturbed_golden_output_fails_naming_it(repo_copy: Path) -> None:
    version = repo_copy / "ranker" / "1"
    golden = torch.load(version / "golden.pt", weights_only=True)
    golden["1/outputs/probability"] = golden["1/outputs/probability"] + 0.05
    torch.save(golden, version / "golden.pt")
    manifest = json.loads((version / "manifest.json").read_text())
    for entry in manifest["files"]:
        if entry["path"] == "golden.pt":
            entry["sha256"] = sha256_of(version / "golden.pt")
            entry["size"] = (version / "golden.pt").stat().st_size
    (version / "manifest.json").write_text(json.dumps(manifest))
    proc = run(str(repo_copy))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "classifier/1: passed" in proc.stdout
    assert "ranker/1: failed" in proc.stdout
    assert "FAILED ranker/1 output 'probability': max abs err 0.05" in proc.stderr


def test_a_corrupted_program_exits_2_naming_the_file(repo_copy: Path) -> None:
    program = repo_copy / "classifier" / "1" / "model.pt2"
    data = bytearray(program.read_bytes())
    data[-10] ^= 0x01
    program.write_bytes(bytes(data))
    proc = run(str(repo_copy / "classifier" / "1"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("Error: ")
    assert "model.pt2 is corrupted" in line
    proc = run(str(repo_copy))  # the whole repository: the other model is still verified
    assert proc.returncode == 2
    assert "ranker/1: passed" in proc.stdout
    assert "Error: classifier/1:" in proc.stderr


def test_an_incomplete_version_is_reported_not_fatal(repo_copy: Path) -> None:
    half = repo_copy / "ranker" / "2"
    half.mkdir()
    (half / "model.pt2").write_bytes(b"partial")
    proc = run(str(repo_copy))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ranker/2: incomplete" in proc.stdout
    assert "ranker/1: passed" in proc.stdout


def test_a_missing_path_is_one_line(tmp_path: Path) -> None:
    proc = run(str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"Error: {tmp_path / 'nope'} does not exist; give REPO, REPO/MODEL or REPO/MODEL/VERSION."
    ]
