"""`torchrig compat ...` end to end: exit codes, JSON, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from torchrig.cli import main


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "torchrig", "compat", *args],
        env={**os.environ, "COLUMNS": "250"},  # rich wraps tables at the terminal width
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    code = exc.value.code
    assert isinstance(code, int)
    return code


def test_check_fail_exits_2_and_shows_the_fix() -> None:
    result = _run("check", "--torch", "2.9.1+cu126", "--gpu", "RTX 5090", "--driver", "570.86.15")
    assert result.returncode == 2, result.stderr
    assert "needs a cu128 or newer build" in result.stdout
    assert "cu128 index" in result.stdout
    assert "verdict: fail" in result.stdout


def test_check_ok_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["compat", "check", "--torch", "2.9.1+cu128", "--gpu", "H100", "--driver", "570.86.15"]
    assert _exit_code(argv) == 0
    assert "verdict: ok" in capsys.readouterr().out


def test_check_warn_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["compat", "check", "--torch", "2.9.1+cu128", "--gpu", "A100", "--driver", "535"]
    assert _exit_code(argv) == 0
    assert "verdict: warn" in capsys.readouterr().out


def test_check_unknown_exits_3_with_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["compat", "check", "--torch", "2.9.1+cu126", "--gpu", "Foo", "--json"]
    assert _exit_code(argv) == 3
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"] == "unknown"
    assert report["findings"][0]["topic"] == "gpu"
    assert report["known"]["variant"] == "cu126"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["check", "--torch", "abc"], "Error: cannot parse torch version 'abc'"),
        (["check", "--torch", "2.9.1", "--driver", "x.y"], "Error: cannot parse driver version"),
        (["check", "--torch", "2.9.1", "--cc", "ampere"], "Error: cannot parse compute capability"),
        (["matrix", "--torch", "9.9"], "Error: torch 9.9 is not in the knowledge base"),
    ],
)
def test_bad_input_is_a_one_line_error(args: list[str], expected: str) -> None:
    result = _run(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(expected)
    assert len(result.stderr.strip().splitlines()) == 1


def test_matrix_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["compat", "matrix", "--torch", "2.11", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_variant = {row["variant"]: row for row in rows}
    assert set(by_variant) == {"cu126", "cu128", "cu129", "cu130"}
    assert "7.0" not in by_variant["cu128"]["sass"]
    assert by_variant["cu130"]["pypi_default"] is True
    assert by_variant["cu130"]["min_driver"] == "580.65.06"
    assert "V100" in by_variant["cu126"]["gpus"]
    assert all(row["source"] for row in rows)


def test_matrix_table() -> None:
    result = _run("matrix")
    assert result.returncode == 0, result.stderr
    for text in ("2.14.1", "2.9.1", "cu132", "9.24.0.43", "595.45.04", "GPUs covered"):
        assert text in result.stdout


def test_gpu_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["compat", "gpu", "NVIDIA GeForce RTX 5090", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["gpu"]["compute_capability"] == "12.0"
    assert answer["builds"]
    assert all(build["variant"] != "cu126" for build in answer["builds"])


def test_gpu_command_unknown_exits_3() -> None:
    result = _run("gpu", "Foo")
    assert result.returncode == 3
    assert "unknown GPU 'Foo'" in result.stdout
