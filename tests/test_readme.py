"""The README never lies: its commands run and exit as it says, its check table is complete.

Executed blocks: ```bash blocks run line by line (a trailing `# exit N` gives the expected
exit code, default 0) and ```python blocks run with exec. ```sh blocks (the set-up
commands, which CI itself runs) are not executed here.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(lang: str) -> list[str]:
    return [body for kind, body in BLOCK.findall(README.read_text()) if kind == lang]


def bash_lines() -> list[str]:
    lines: list[str] = []
    for body in blocks("bash"):
        lines.extend(
            line for line in body.splitlines() if line.strip() and not line.startswith("#")
        )
    return lines


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory for all README commands, run in order, so later lines see earlier files."""
    return tmp_path_factory.mktemp("readme")


@pytest.mark.parametrize("line", bash_lines())
def test_readme_command(line: str, workdir: Path) -> None:
    expected = 0
    match = re.search(r"#\s*exit\s+(\d+)\s*$", line)
    if match:
        expected = int(match.group(1))
    command = line.split(" #", 1)[0]
    argv = shlex.split(command)
    redirect = None
    if ">" in argv:
        at = argv.index(">")
        redirect, argv = argv[at + 1], argv[:at]
    assert argv[0] == "torchrig", f"README bash blocks run torchrig only: {line}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHRIG_")}
    proc = subprocess.run(
        [sys.executable, "-m", "torchrig", *argv[1:]],
        capture_output=True,
        text=True,
        cwd=workdir,
        env=env,
        timeout=240,
        check=False,
    )
    assert proc.returncode == expected, f"{line}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    if redirect:
        (workdir / redirect).write_text(proc.stdout)


def test_readme_python_blocks() -> None:
    for body in blocks("python"):
        exec(compile(body, str(README), "exec"), {"__name__": "readme"})


def test_readme_documents_every_check_id() -> None:
    from torchrig.doctor import CHECKS

    text = README.read_text()
    documented = set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", text, re.MULTILINE))
    assert documented == {c.id for c in CHECKS}


def test_readme_setup_is_two_commands_that_ci_runs() -> None:
    (setup,) = blocks("sh")
    commands = [line for line in setup.splitlines() if line.strip()]
    assert len(commands) == 2
    ci = (README.parent / ".ci" / "run").read_text()
    for command in commands:
        assert command in ci
