"""`torchrig pack --file`: files packed beside the program (a tokenizer for a text step),
in a real process."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from cli_runs import torchrig_pack
from torchrig.packaging import read_manifest
from torchrig.packaging.files import sha256_of

FACTORY = "import torch\n\n\ndef make():\n    return torch.nn.Linear(3, 2), (torch.randn(2, 3),)\n"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return torchrig_pack("files_factory:make", "--name", "t", "--repository", "models", *args,
                         cwd=cwd)  # fmt: skip


def test_file_is_packed_and_listed_with_its_checksum(tmp_path: Path) -> None:
    (tmp_path / "files_factory.py").write_text(FACTORY)
    (tmp_path / "tokenizer.json").write_text('{"not": "checked at pack"}')
    proc = run("--file", "tokenizer.json", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "tokenizer.json" in [f["path"] for f in json.loads(proc.stdout)["files"]]
    version = tmp_path / "models" / "t" / "1"
    entry = next(f for f in read_manifest(version).files if f.path == "tokenizer.json")
    assert entry.sha256 == sha256_of(tmp_path / "tokenizer.json")


def test_missing_file_and_a_taken_name_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "files_factory.py").write_text(FACTORY)
    (tmp_path / "model.pt2").write_text("a file named like the program")
    missing = run("--file", "nope.json", cwd=tmp_path)
    assert missing.returncode == 2
    assert "--file nope.json: no such file" in missing.stderr
    assert "Traceback" not in missing.stderr
    taken = run("--file", "model.pt2", cwd=tmp_path)
    assert taken.returncode == 2
    assert "already has a file named model.pt2; rename it" in taken.stderr
