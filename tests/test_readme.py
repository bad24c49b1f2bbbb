"""The README never lies: its commands run and say what it says, its check table is complete.

Executed blocks:
- ```bash blocks run line by line, each block in a directory of its own (so a block only
  relies on what its own lines made, plus the snapshots of tests/data/snapshots/, which the
  README names). A trailing `# exit N` gives the expected exit code (default 0); `# exit N:
  TEXT` also the documented reason, which the output must contain. A failing line must
  fail for its own reason, never for a usage error (`No such command`, `No such option`):
  a misspelt subcommand exits 2 too.
- ```python blocks run with exec, each in a directory of its own; every `print` carries
  its expected output as a comment (on its line, or the line after it), compared exactly.
```sh blocks (the set-up commands, which CI itself runs) are not executed here, nor are
```text blocks (sessions against a live server: tests/server/test_demo_cli.py runs those).
The README is read when the tests are collected, so other sections can change freely.
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cli_runs import torchrig

README = Path(__file__).resolve().parent.parent / "README.md"
SNAPSHOTS = Path(__file__).resolve().parent / "data" / "snapshots"
FENCE = re.compile(r"^```(\w*)\s*$")
EXIT = re.compile(r"\s#\s*exit\s+(\d+)(?::\s*(.*?))?\s*$")
# what click prints for a command line it could not parse: never a documented refusal
USAGE_ERRORS = (
    "No such command",
    "No such option",
    "Usage:",
    "Missing option",
    "Missing argument",
    "Got unexpected extra argument",
)
PRINT = re.compile(r"^\s*print\(.*?\)(?:\s+#\s?(?P<inline>.*))?$")


@dataclass(frozen=True)
class Block:
    kind: str
    body: str
    line: int  # README line of the first line of the body
    section: str  # the heading above it
    ordinal: int = 1  # its place among the section's blocks of this kind

    @property
    def id(self) -> str:
        words = re.sub(r"[^a-z0-9]+", "-", self.section.lower()).strip("-")
        return f"{words[:40]}-{self.ordinal}"


def blocks(kind: str) -> list[Block]:
    """The README's fenced blocks of one kind, with where they are."""
    found: list[Block] = []
    section = "top"
    fence: tuple[str, int, list[str]] | None = None
    for number, text in enumerate(README.read_text().splitlines(), start=1):
        match = FENCE.match(text)
        if fence is None:
            if match:
                fence = (match.group(1), number + 1, [])
            elif text.startswith("#"):
                section = text.lstrip("#").strip()
        elif match and not match.group(1):
            lang, first, lines = fence
            if lang == kind:
                ordinal = 1 + sum(1 for b in found if b.section == section)
                found.append(Block(lang, "\n".join(lines) + "\n", first, section, ordinal))
            fence = None
        else:
            fence[2].append(text)
    return found


@dataclass(frozen=True)
class Command:
    text: str
    exit_code: int
    reason: str | None


def commands(block: Block) -> list[Command]:
    found: list[Command] = []
    for text in block.body.splitlines():
        if not text.strip() or text.startswith("#"):
            continue
        match = EXIT.search(text)
        code, reason = (int(match.group(1)), match.group(2) or None) if match else (0, None)
        found.append(Command(text, code, reason))
    return found


def one_line(text: str) -> str:
    return " ".join(text.split())


def run_command(command: Command, workdir: Path) -> None:
    argv = shlex.split(command.text, comments=True)
    redirect = None
    if ">" in argv:
        at = argv.index(">")
        redirect, argv = argv[at + 1], argv[:at]
    assert argv[0] == "torchrig", f"README bash blocks run torchrig only: {command.text}"
    # rich tables: a documented reason is not wrapped across cells
    proc = torchrig(*argv[1:], cwd=workdir, env={"COLUMNS": "250"}, timeout_s=240)
    said = f"{command.text}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == command.exit_code, said
    assert "Traceback" not in proc.stderr, said
    if command.exit_code != 0:
        output = proc.stdout + proc.stderr
        assert not [u for u in USAGE_ERRORS if u in output], (
            f"a usage error, not the reason: {said}"
        )
        if "Error:" in proc.stderr:
            assert len(proc.stderr.strip().splitlines()) == 1, f"not a one-line error: {said}"
        if command.reason is not None:
            assert one_line(command.reason) in one_line(output), (
                f"not the documented reason: {said}"
            )
    if redirect:
        (workdir / redirect).write_text(proc.stdout)


@pytest.mark.parametrize("block", blocks("bash"), ids=lambda b: b.id)
def test_readme_bash_block(block: Block, tmp_path: Path) -> None:
    for snapshot in SNAPSHOTS.glob("*.json"):
        shutil.copy(snapshot, tmp_path / snapshot.name)
    lines = commands(block)
    assert lines, f"an empty bash block at README line {block.line}"
    for command in lines:
        run_command(command, tmp_path)


def expected_prints(block: Block) -> dict[int, str]:
    """README line of each `print(...)` -> the output its comment promises."""
    lines = block.body.splitlines()
    expected: dict[int, str] = {}
    for index, text in enumerate(lines):
        match = PRINT.match(text)
        if match is None:
            continue
        promise = match.group("inline")
        if promise is None and index + 1 < len(lines) and lines[index + 1].lstrip().startswith("#"):
            promise = lines[index + 1].lstrip()[1:].strip()
        assert promise is not None, f"README line {block.line + index}: say what it prints"
        expected[block.line + index] = promise
    return expected


@pytest.mark.parametrize("block", blocks("python"), ids=lambda b: b.id)
def test_readme_python_block(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    printed: dict[int, list[str]] = {}

    def recording_print(*args: Any, sep: str | None = " ", **_: Any) -> None:
        caller = sys._getframe(1)
        if caller.f_code.co_filename == str(README):
            text = (" " if sep is None else sep).join(str(a) for a in args)
            printed.setdefault(caller.f_lineno, []).append(text)

    # compiled at its own README lines, so a traceback and the prints point into the README
    source = "\n" * (block.line - 1) + block.body
    exec(compile(source, str(README), "exec"), {"__name__": "readme", "print": recording_print})
    expected = expected_prints(block)
    assert {line: [text] for line, text in expected.items()} == printed


def test_the_python_output_check_bites() -> None:
    """A print whose comment promises something else is caught (the check is not vacuous)."""
    block = Block("python", 'print("a", 1)  # a 1\nprint(2)\n# 3\n', line=1, section="t")
    assert expected_prints(block) == {1: "a 1", 2: "3"}
    with pytest.raises(AssertionError, match="say what it prints"):
        expected_prints(Block("python", "print(2)\nx = 1\n", line=1, section="t"))


def test_a_misspelt_subcommand_is_not_a_documented_refusal(tmp_path: Path) -> None:
    """`torchrig image biuld` exits 2 as the real refusals do; the usage check tells them apart."""
    with pytest.raises(AssertionError, match="a usage error"):
        run_command(Command("torchrig image biuld ctx  # exit 2", 2, None), tmp_path)
    with pytest.raises(AssertionError, match="not the documented reason"):
        run_command(
            Command("torchrig compat check --torch banana  # exit 2: x", 2, "no such reason"),
            tmp_path,
        )


def test_readme_blocks_are_found() -> None:
    """The parser sees the README's blocks (so the parametrized tests are not vacuous)."""
    bash = blocks("bash")
    assert len(bash) >= 6
    assert sum(len(commands(b)) for b in bash) >= 20
    assert any(c.exit_code == 2 and c.reason for b in bash for c in commands(b))
    assert len(blocks("python")) >= 2
    assert all(expected_prints(b) for b in blocks("python"))


def test_readme_documents_every_check_id() -> None:
    from torchrig.doctor import CHECKS

    text = README.read_text()
    # the doctor's section only: other sections have check tables of their own (image test)
    section = text.split("## `torchrig doctor`", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", section, re.MULTILINE))
    assert documented == {c.id for c in CHECKS}


def test_readme_setup_is_two_commands_that_ci_runs() -> None:
    (setup,) = blocks("sh")
    commands = [line for line in setup.body.splitlines() if line.strip()]
    assert len(commands) == 2
    ci = (README.parent / ".ci" / "run").read_text()
    for command in commands:
        assert command in ci
