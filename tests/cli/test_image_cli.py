"""`torchrig image ...` end to end: output, exit codes and one-line errors."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from torchrig import __version__
from torchrig.cli import main


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "torchrig", "image", *args],
        env={**os.environ, "COLUMNS": "250"},
        capture_output=True, text=True, timeout=120, check=False, cwd=cwd,
    )  # fmt: skip


def _main(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(["image", *argv])
    code = exc.value.code
    assert isinstance(code, int)
    return code


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_tag_prints_the_rule(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["tag", "--torch", "2.9.1", "--cuda", "12.8", "--flavour", "serve",
            "--registry", "registry.example.com/platform", "--suffix", "p1"]  # fmt: skip
    assert _main(argv) == 0
    assert (
        capsys.readouterr().out == "registry.example.com/platform/pytorch:2.9.1-cuda12.8-serve-p1\n"
    )


def test_tag_with_date(capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(["tag", "--torch", "2.10", "--date"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("pytorch:2.10.0-cuda12.8-runtime-")
    assert out[-8:].isdigit()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["tag", "--torch", "2.9", "--registry", "Bad Registry"], "not a valid image name prefix"),
        (["tag", "--torch", "2.9", "--suffix", "-x"], "tag suffix '-x'"),
        (["tag", "--torch", "2.9", "--suffix", "a", "--date"], "not both"),
        (["render", "--torch", "2.9.1", "--cuda", "13.2", "-o", "ctx"], "nearest: 13.0"),
        (
            ["render", "--torch", "2.11", "--cuda", "13.0", "--driver-floor", "550", "-o", "ctx"],
            "needs driver >= 580.65.06",
        ),
        (["render", "--torch", "2.9", "--constraints", "missing.txt", "-o", "ctx"], "cannot read"),
        (["tag", "--torch", "banana"], "cannot parse torch version"),
        (["matrix", "--torch", "1.0"], "not in the knowledge base"),
    ],
)
def test_bad_input_is_one_line_exit_2(args: list[str], needle: str, tmp_path: Path) -> None:
    assert needle in _one_line_error(_run(*args, cwd=tmp_path))


def test_matrix_json_lists_every_image(capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(["matrix", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {row["flavour"] for row in rows} == {"runtime", "dev", "serve"}
    first = rows[0]
    assert set(first) >= {"torch", "cuda", "flavour", "min_driver", "gpus", "status"}
    assert any(row["status"] == "experimental" and row["needs_flag"] for row in rows)


def test_matrix_filters_by_driver_and_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        _main(["matrix", "--driver-floor", "570", "--stable", "--flavour", "serve", "--json"]) == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert rows
    assert all(r["cuda"] in {"12.6", "12.8"} and r["flavour"] == "serve" for r in rows)
    assert all(r["status"] != "experimental" for r in rows)


def test_matrix_table() -> None:
    result = _run("matrix", "--torch", "2.9")
    assert result.returncode == 0, result.stderr
    assert "GPUs covered" in result.stdout
    assert "H100" in result.stdout
    assert "--allow-experimental" in result.stdout


def test_render_with_constraints_writes_a_context(tmp_path: Path) -> None:
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("torch==2.9.1\nnumpy==2.3.4\ntorchrig==0.1.0\n")
    result = _run("render", "--torch", "2.9.1", "--cuda", "12.8", "--flavour", "serve",
                  "--constraints", str(constraints), "-o", str(tmp_path / "ctx"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (
        "rendered serve image torch 2.9.1+cu128 on nvidia/cuda:12.8.1-base-ubuntu24.04"
        in result.stdout
    )
    names = {p.name for p in (tmp_path / "ctx").iterdir()}
    assert names == {"Dockerfile", "constraints.txt", "requirements.txt", "verify_pins.py",
                     "entrypoint.sh", "healthcheck.py", ".dockerignore", "wheels",
                     "wheels.sha256"}  # fmt: skip
    assert os.access(tmp_path / "ctx" / "entrypoint.sh", os.X_OK)
    # torchrig is on no public index: the serve context carries a wheel of this torchrig
    wheel = tmp_path / "ctx" / "wheels" / f"torchrig-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert "torchrig/image/render.py" in names
    assert f"torchrig-{__version__}.dist-info/METADATA" in names
    # its checksum is copied into the build: a changed wheel is never a cached layer
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    sums = (tmp_path / "ctx" / "wheels.sha256").read_text()
    assert sums == f"{digest}  /tmp/torchrig/wheels/{wheel.name}\n"


def test_render_is_offline_and_asks_for_the_lock(tmp_path: Path) -> None:
    line = _one_line_error(_run("render", "--torch", "2.9.1", "--cuda", "12.8", "-o",
                                str(tmp_path / "ctx")))  # fmt: skip
    assert "render is offline" in line
    assert "torchrig image lock --torch 2.9.1 --cuda 12.8" in line
    assert not (tmp_path / "ctx").exists()


def test_render_refuses_a_loose_constraints_file(tmp_path: Path) -> None:
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("torch==2.9.1+cu128\nnumpy>=2\n")
    line = _one_line_error(_run("render", "--torch", "2.9.1", "--constraints", str(constraints),
                                "-o", str(tmp_path / "ctx")))  # fmt: skip
    assert "not an exact pin" in line


def test_build_without_any_engine_is_a_clear_error(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\n")
    empty = tmp_path / "bin"  # a PATH with no docker, buildah or podman on it
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty), "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    result = subprocess.run(
        [sys.executable, "-m", "torchrig", "image", "build", str(context), "--tag",
         "registry.example.com/pytorch:2.9.1-cuda12.8-runtime"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    line = _one_line_error(result)
    assert "no OCI engine here can build images" in line
    assert "no docker on PATH; no buildah on PATH; no podman on PATH" in line


def test_build_refuses_a_missing_secret_file_and_bad_build_args(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\n")
    tag = "registry.example.com/pytorch:2.9.1-cuda12.8-runtime"
    line = _one_line_error(_run("build", str(context), "--tag", tag, "--secret",
                                f"id=netrc,src={tmp_path / 'absent'}"))  # fmt: skip
    assert "is not a file" in line
    line = _one_line_error(_run("build", str(context), "--tag", tag, "--build-arg", "NOVALUE"))
    assert "must be KEY=VALUE" in line
    line = _one_line_error(_run("build", str(context), "--tag", tag, "--secret", "src=/x"))
    assert "needs id=NAME" in line


def test_build_needs_a_rendered_context(tmp_path: Path) -> None:
    line = _one_line_error(_run("build", str(tmp_path), "--tag", "r.io/pytorch:x"))
    assert "has no Dockerfile" in line


def test_workflow_command_writes_the_file(tmp_path: Path) -> None:
    target = tmp_path / ".github" / "workflows" / "images.yml"
    result = _run("workflow", "-o", str(target))
    assert result.returncode == 0, result.stderr
    assert "torchrig image build" in target.read_text()
