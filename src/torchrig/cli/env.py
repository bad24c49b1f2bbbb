"""`torchrig env snapshot | diff | check`: fingerprints and the drift that matters."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.text import Text

from torchrig.cli.output import console, emit_json
from torchrig.settings import EnvSettings, load_settings, settings_options

STYLE = {"breaking": "bold red", "risky": "yellow", "info": "dim"}
INFO_SHOWN = 25

# exit codes of `env diff` and `env check`
EXIT_SAME = 0
EXIT_DRIFT = 1  # `diff`: something breaking; `check`: breaking, or risky with --strict
# bad input exits 2 through TorchrigError

CONFIG_OPTION = click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    help="TOML settings file with an [env] table [env TORCHRIG_CONFIG].",
)


def _settings(config: Path | None, options: dict[str, Any]) -> EnvSettings:
    return load_settings(config_file=config, overrides={"env": options}).env


def _deps(settings: EnvSettings) -> list[str]:
    return [d.strip() for d in settings.model_deps.split(",") if d.strip()]


@click.group("env")
def env() -> None:
    """Fingerprint environments and say which differences between two break things."""


@env.command("snapshot")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the lock to this file (default: standard output).",
)
@settings_options("env", only=("deep",))
@CONFIG_OPTION
def snapshot(output: Path | None, config: Path | None, **options: Any) -> None:
    """Write this environment's lock: facts snapshot plus Python distributions, as JSON."""
    from torchrig.envlock import lock_to_json, take_lock, write_lock

    settings = _settings(config, options)
    lock = take_lock(deep=settings.deep)
    if output is None:
        sys.stdout.write(lock_to_json(lock).decode())
        return
    write_lock(lock, output)
    click.echo(f"wrote {output} ({len(lock.packages)} distributions)", err=True)


LOCK = click.Path(path_type=Path, dir_okay=False)


@env.command("diff")
@click.argument("a", type=LOCK)
@click.argument("b", type=LOCK)
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON.")
@click.option("--all", "show_all", is_flag=True, help="Show every informational difference.")
@settings_options("env", only=("model_deps",))
@CONFIG_OPTION
def diff_command(
    a: Path, b: Path, as_json: bool, show_all: bool, config: Path | None, **options: Any
) -> None:
    """Compare lock A (reference) with lock B. Exit 0: nothing breaking; 1: breaking drift."""
    from torchrig.envlock import diff, load_lock

    settings = _settings(config, options)
    report = diff(
        load_lock(a),
        load_lock(b),
        model_dependencies=_deps(settings),
        a_origin=str(a),
        b_origin=str(b),
    )
    _finish(report, as_json=as_json, show_all=show_all, fail_on_risky=False)


@env.command("check")
@click.argument("lock", type=LOCK)
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON.")
@click.option("--all", "show_all", is_flag=True, help="Show every informational difference.")
@settings_options("env", only=("strict", "model_deps", "deep"))
@CONFIG_OPTION
def check(lock: Path, as_json: bool, show_all: bool, config: Path | None, **options: Any) -> None:
    """Compare the running environment with LOCK; exit 1 on breaking drift (--strict: risky)."""
    from torchrig.envlock import diff, load_lock, take_lock

    settings = _settings(config, options)
    reference = load_lock(lock)
    report = diff(
        reference,
        take_lock(deep=settings.deep),
        model_dependencies=_deps(settings),
        a_origin=str(lock),
        b_origin="this environment",
    )
    _finish(report, as_json=as_json, show_all=show_all, fail_on_risky=settings.strict)


def _finish(report: Any, *, as_json: bool, show_all: bool, fail_on_risky: bool) -> None:
    drift = report.breaking > 0 or (fail_on_risky and report.risky > 0)
    if as_json:
        emit_json(report)
    else:
        render(report, show_all=show_all, drift=drift)
    sys.exit(EXIT_DRIFT if drift else EXIT_SAME)


def render(report: Any, *, show_all: bool, drift: bool) -> None:
    out = console()
    out.print(Text(f"A  {report.a}: {report.a_summary}"))
    out.print(Text(f"B  {report.b}: {report.b_summary}"))
    for severity in ("breaking", "risky", "info"):
        items = [d for d in report.differences if d.severity == severity]
        if not items:
            continue
        out.print(Text(f"\n{severity.upper()} ({len(items)})", style=STYLE[severity]))
        shown = items if severity != "info" or show_all else items[:INFO_SHOWN]
        for item in shown:
            line = Text("  ")
            line.append(item.message, style=None if severity == "info" else "bold")
            out.print(line)
            if item.consequence and severity != "info":
                out.print(Text(f"    can cause: {item.consequence}"))
        if len(shown) < len(items):
            out.print(Text(f"  … {len(items) - len(shown)} more (--all or --json)", style="dim"))
    verdict = (
        "drift that breaks things"
        if report.breaking
        else "risky drift"
        if report.risky
        else "no breaking or risky drift"
    )
    tail = f"\nverdict: {verdict} ({report.breaking} breaking, {report.risky} risky, "
    tail += f"{report.info} info)"
    out.print(Text(tail, style="bold red" if drift else "green"))
