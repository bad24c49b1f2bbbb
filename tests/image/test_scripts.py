"""The scripts the images run, run here: the serve entrypoint (doctor, then exec) and dev start."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from torchrig.image.render import template

STAND_IN = [sys.executable, "-c", "import os, sys; print('served', os.getpid()); sys.exit(7)"]


def _entrypoint(tmp_path: Path) -> Path:
    path = tmp_path / "entrypoint.sh"
    path.write_text(template("entrypoint.sh"))
    path.chmod(0o755)
    return path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHRIG_")}
    # the image's PATH has the venv's bin first: so must the test's (torchrig lives there)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def test_entrypoint_runs_the_doctor_then_execs_the_command(tmp_path: Path) -> None:
    script = _entrypoint(tmp_path)
    proc = subprocess.Popen(
        ["sh", str(script), *STAND_IN],
        env=_env(TORCHRIG_DOCTOR_REQUIRE_GPU="false"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 7, err  # the command's own exit code: nothing wraps it
    assert "verdict" in err.lower() or "torch" in err  # the doctor's report went to stderr
    # exec: the command replaced the shell, so it has the shell's PID
    assert out.split() == ["served", str(proc.pid)]


def test_entrypoint_stops_with_the_doctors_message_when_it_fails(tmp_path: Path) -> None:
    script = _entrypoint(tmp_path)
    # this machine has no GPU: requiring one makes the doctor fail (the image's default)
    proc = subprocess.run(
        ["sh", str(script), *STAND_IN],
        env=_env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "served" not in proc.stdout
    assert "gpu.visible" in proc.stderr  # the doctor's failed check, with its fix
    assert "torchrig doctor failed (exit 2)" in proc.stderr
    assert "TORCHRIG_DOCTOR_REQUIRE_GPU=false" in proc.stderr


def test_entrypoint_without_a_command_says_so(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["sh", str(_entrypoint(tmp_path))], env=_env(), capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 64
    assert "no command" in proc.stderr


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen (openssh-client)")
def test_dev_start_makes_host_keys_and_execs(tmp_path: Path) -> None:
    script = tmp_path / "dev-start.sh"
    script.write_text(template("dev-start.sh"))
    ssh_dir = tmp_path / "sshd"
    proc = subprocess.run(
        ["sh", str(script), "sh", "-c", "echo started"],
        env=_env(TORCHRIG_SSH_DIR=str(ssh_dir), HOME=str(tmp_path)),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "started"
    assert (ssh_dir / "ssh_host_ed25519_key").is_file()
    assert "sshd not started" in proc.stderr  # no keys given: no sshd, and it says so
    assert oct((ssh_dir / "authorized_keys").stat().st_mode & 0o777) == "0o600"


def test_verify_pins_rejects_an_unpinned_distribution(tmp_path: Path) -> None:
    script = tmp_path / "verify_pins.py"
    script.write_text(template("verify_pins.py"))
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("pytest==0.0.1\n")
    proc = subprocess.run(
        [sys.executable, str(script), str(constraints)], capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "0.0.1 is pinned" in proc.stderr
    assert "is installed but not pinned" in proc.stderr
