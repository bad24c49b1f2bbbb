"""`torchrig doctor`: collect facts (or read a snapshot), judge them, render the verdict."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import click
import msgspec
from rich.table import Table
from rich.text import Text

from torchrig.cli.output import console, emit_json
from torchrig.errors import SnapshotError, UsageError
from torchrig.settings import load_settings, settings_options

STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}
MARK = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


@click.command("doctor")
@settings_options("doctor")
@click.option(
    "--from",
    "from_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Judge a snapshot taken elsewhere (--save-snapshot, or an `env snapshot` lock) "
    "instead of this machine.",
)
@click.option(
    "--save-snapshot",
    type=click.Path(path_type=Path, dir_okay=False, writable=True),
    help="Also write the collected facts snapshot to this file (to judge it elsewhere).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (see README).")
@click.option("--json-schema", is_flag=True, help="Print the JSON Schema of --json and exit.")
@click.option(
    "--explain",
    "explain_id",
    metavar="CHECK_ID",
    help="Print what one check judges, the facts it reads and the sources behind its rules, "
    "and exit (e.g. --explain gpu.arch).",
)
@click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    help="TOML settings file with a [doctor] table [env TORCHRIG_CONFIG].",
)
def doctor(
    *,
    from_file: Path | None,
    save_snapshot: Path | None,
    as_json: bool,
    json_schema: bool,
    explain_id: str | None,
    config: Path | None,
    **options: Any,
) -> None:
    """Prove this machine or container can run its PyTorch build on its GPUs.

    Exit code: 0 ok (warnings too, unless --strict), 1 warnings with --strict,
    2 failures or bad input.
    """
    from torchrig.doctor import diagnose
    from torchrig.doctor.model import Report

    if json_schema:
        emit_json(msgspec.json.schema(Report))
        return
    if explain_id is not None:
        from torchrig.doctor.explain import explain_check

        explanation = explain_check(explain_id)
        if as_json:
            emit_json(explanation)
        else:
            render_explanation(explanation)
        return
    settings = load_settings(config_file=config, overrides={"doctor": options}).doctor
    if not 0 < settings.probe_timeout_s < math.inf:  # NaN too
        raise UsageError("--probe-timeout-s must be a positive, finite number of seconds.")
    if settings.min_shm_mb <= 0:
        raise UsageError("--min-shm-mb must be a positive number of MiB.")
    if from_file is not None and options.get("deep"):
        raise UsageError(
            "--deep runs live probes on this machine and cannot be combined with --from; "
            "take the snapshot with `torchrig doctor --deep --save-snapshot FILE` on the node."
        )
    if from_file is not None and save_snapshot is not None:
        raise UsageError("--save-snapshot writes a live snapshot; it cannot be used with --from.")

    if from_file is not None:
        from torchrig.envlock.model import load_any_snapshot

        snapshot = load_any_snapshot(from_file)
        source = str(from_file)
    else:
        from torchrig.facts import collect_snapshot
        from torchrig.facts.model import snapshot_to_json

        snapshot = collect_snapshot(deep=settings.deep, probe_timeout_s=settings.probe_timeout_s)
        source = "live"
        if save_snapshot is not None:
            try:
                save_snapshot.write_bytes(snapshot_to_json(snapshot))
            except OSError as exc:
                raise SnapshotError(
                    f"cannot write snapshot to {save_snapshot}: {exc.strerror}."
                ) from None

    report = diagnose(
        snapshot,
        require_gpu=settings.require_gpu,
        strict=settings.strict,
        min_shm_bytes=settings.min_shm_mb * 1024 * 1024,
        source=source,
    )
    if as_json:
        emit_json(report)
    else:
        render(report)
    sys.exit(report.exit_code)


def render(report: Any) -> None:
    """A table for people: one row per result, the fix under the finding."""
    out = console()
    title = f"torchrig doctor — {report.hostname or 'unknown host'}"
    if report.source != "live":
        title += f" (snapshot {report.source}, taken {report.snapshot_taken_at})"
    table = Table(title=title, show_lines=False, expand=False)
    table.add_column("status", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("on", no_wrap=True)
    table.add_column("finding / fix")
    for res in report.checks:
        finding = Text(res.message)
        if res.cause:
            finding.append(f"\ncause: see {res.cause}", style="bold")
        if res.fix and res.status in ("warn", "fail"):
            finding.append("\nfix: ", style="bold")
            finding.append(res.fix)
        table.add_row(
            Text(MARK[res.status], style=STYLE[res.status]),
            res.id,
            res.subject or "",
            finding,
            style="dim" if res.status == "skip" else None,
        )
    out.print(table)
    s = report.summary
    verdict = Text(f"verdict: {report.verdict}", style=STYLE.get(report.verdict, ""))
    verdict.append(f"  ({s.ok} ok, {s.warn} warn, {s.fail} fail, {s.skip} skipped)", style="")
    if not report.deep:
        verdict.append("  — add --deep to launch kernels and probe SDPA and NCCL", style="dim")
    out.print(verdict)


def render_explanation(explanation: Any) -> None:
    """`--explain` for people: what the check judges, its facts, its sources."""
    out = console()
    deep = " (--deep only)" if explanation.deep else ""
    out.print(Text(f"{explanation.id}{deep}", style="bold"))
    out.print(f"judges: {explanation.judges}")
    out.print("facts it reads: " + (", ".join(explanation.facts) or "none"))
    out.print("sources behind its rules:")
    for note in explanation.sources:
        line = Text(f"  - {note.name}: ", style="bold")
        line.append(note.source, style="")
        if note.detail:
            line.append(f" [{note.detail}]", style="dim")
        if note.verified is False:
            line.append(" (verified: false)", style="yellow")
        out.print(line)
