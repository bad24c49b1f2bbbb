"""`torchrig verify REPO[/MODEL[/VERSION]]`: replay golden examples in this environment."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from torchrig.cli.output import console, emit_json
from torchrig.errors import TorchrigError, UsageError

EXIT_MISMATCH = 1
EXIT_BAD_INPUT = 2


@dataclass(frozen=True)
class Outcome:
    """One version's result: passed, failed (golden mismatch), error or incomplete."""

    model: str
    version: int
    path: str
    status: str
    report: Any = None  # VerifyReport when verified
    error: str | None = None


def _versions(path: Path) -> list[Path]:
    """The version directories in scope: a version, a model's versions, a repo's versions."""
    if not path.exists():
        raise UsageError(f"{path} does not exist; give REPO, REPO/MODEL or REPO/MODEL/VERSION.")
    if not path.is_dir():
        raise UsageError(f"{path} is not a directory.")
    if path.name.isdigit() or (path / "manifest.json").exists():
        return [path]
    numeric = sorted((p for p in path.iterdir() if p.is_dir() and p.name.isdigit()), key=_num)
    if numeric:
        return numeric
    found: list[Path] = []
    for model in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found.extend(
            sorted((p for p in model.iterdir() if p.is_dir() and p.name.isdigit()), key=_num)
        )
    if not found:
        raise UsageError(f"{path} holds no model versions (<model>/<number>/manifest.json).")
    return found


def _num(path: Path) -> int:
    return int(path.name)


def _verify_one(version_dir: Path, device: str) -> Outcome:
    from torchrig.packaging.files import read_manifest
    from torchrig.packaging.manifest import MANIFEST_FILE
    from torchrig.packaging.verify import verify_loaded

    model = version_dir.parent.name
    version = int(version_dir.name) if version_dir.name.isdigit() else 0
    path = str(version_dir)
    if not (version_dir / MANIFEST_FILE).exists():
        error = f"no {MANIFEST_FILE} (half-copied or still being written)"
        return Outcome(model, version, path, status="incomplete", error=error)
    try:
        report = verify_loaded(version_dir, read_manifest(version_dir), device=device)
    except TorchrigError as exc:
        return Outcome(model, version, path, status="error", error=exc.message)
    return Outcome(model, version, path, "passed" if report.passed else "failed", report=report)


def _render(outcomes: list[Outcome]) -> None:
    out = console()
    for outcome in outcomes:
        title = f"{outcome.model}/{outcome.version}: {outcome.status}"
        if outcome.report is None:
            out.print(f"{title} - {outcome.error}")
            continue
        report = outcome.report
        if not report.outputs:
            out.print(f"{title} - no golden examples to replay (program loaded on {report.device})")
            continue
        table = Table(title=f"{title} on {report.device} ({report.examples} examples)")
        for column in ("output", "datatype", "max abs err", "max rel err", "atol", "rtol", ""):
            table.add_column(column)
        for check in report.outputs:
            table.add_row(
                check.name,
                check.datatype,
                f"{check.max_abs_err:.3g}",
                f"{check.max_rel_err:.3g}",
                f"{check.atol:g}",
                f"{check.rtol:g}",
                "ok" if check.passed else f"FAIL {check.detail}".strip(),
            )
        out.print(table)
    for outcome in outcomes:
        if outcome.status == "failed":
            for check in outcome.report.outputs:
                if not check.passed:
                    click.echo(
                        f"FAILED {outcome.model}/{outcome.version} output {check.name!r}: "
                        f"max abs err {check.max_abs_err:.3g} (atol {check.atol:g}, rtol "
                        f"{check.rtol:g}) {check.detail}".rstrip(),
                        err=True,
                    )
        elif outcome.status == "error":
            click.echo(f"Error: {outcome.model}/{outcome.version}: {outcome.error}", err=True)


@click.command("verify")
@click.argument("path", type=click.Path(path_type=Path), metavar="REPO[/MODEL[/VERSION]]")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def verify(path: Path, device: str, as_json: bool) -> None:
    """Replay every complete version's golden examples on DEVICE and compare per output.
    Exit 0: all pass; 1: an output differs beyond its tolerance; 2: bad input."""
    versions = _versions(path)
    if len(versions) == 1 and (path.name.isdigit() or (path / "manifest.json").exists()):
        from torchrig.packaging.verify import verify_version

        report = verify_version(versions[0], device=device)  # errors exit 2 with one line
        outcome = Outcome(
            model=report.model,
            version=report.version,
            path=str(versions[0]),
            status="passed" if report.passed else "failed",
            report=report,
        )
        outcomes = [outcome]
    else:
        outcomes = [_verify_one(v, device) for v in versions]
    if as_json:
        emit_json([o.__dict__ for o in outcomes])
    else:
        _render(outcomes)
    if any(o.status == "error" for o in outcomes):
        sys.exit(EXIT_BAD_INPUT)
    if any(o.status == "failed" for o in outcomes):
        sys.exit(EXIT_MISMATCH)
