"""`torchrig compat ...`: ask the knowledge base about torch builds, CUDA, drivers and GPUs.

Exit codes of `check` and `gpu`: 0 ok or warn, 2 fail, 3 unknown; malformed input
is a one-line `Error: ...` with exit code 2.
"""

from __future__ import annotations

import sys

import click
from rich.table import Table
from rich.text import Text

from torchrig.cli.output import console, emit_json
from torchrig.compat import builds_for, check, load_kb, matrix
from torchrig.compat.model import CompatReport

EXIT_CODES = {"ok": 0, "warn": 0, "fail": 2, "unknown": 3}
_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "unknown": "magenta"}


@click.group()
def compat() -> None:
    """Ask the knowledge base: torch build, CUDA, architectures, driver, GPU."""


def _render_report(report: CompatReport) -> None:
    out = console()
    facts = "  ".join(f"{key}={value}" for key, value in report.known.items() if key != "arch_list")
    out.print(Text(facts, style="dim"))
    table = Table(show_header=True, header_style="bold")
    table.add_column("status")
    table.add_column("topic")
    table.add_column("finding", overflow="fold")
    table.add_column("fix", overflow="fold")
    for finding in report.findings:
        table.add_row(
            Text(finding.status, style=_STYLE[finding.status]),
            finding.topic,
            Text(finding.message),
            Text(finding.fix or ""),
        )
    out.print(table)
    out.print(Text(f"verdict: {report.verdict}", style=_STYLE[report.verdict]))


@compat.command("check")
@click.option("--torch", "torch_version", required=True, help="torch build, e.g. 2.9.1+cu126.")
@click.option("--gpu", default=None, help='GPU name or NVML name, e.g. "RTX 5090".')
@click.option("--driver", default=None, help="NVIDIA driver version, e.g. 570.86.15.")
@click.option(
    "--cc", default=None, help="compute capability, e.g. 12.0 (instead of or with --gpu)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check_command(
    torch_version: str,
    gpu: str | None,
    driver: str | None,
    cc: str | None,
    as_json: bool,
) -> None:
    """Judge a torch build against a GPU and driver; name the cause and the fix."""
    report = check(torch=torch_version, gpu=gpu, driver=driver, cc=cc)
    if as_json:
        emit_json(report)
    else:
        _render_report(report)
    sys.exit(EXIT_CODES[report.verdict])


@compat.command("matrix")
@click.option("--torch", "release", default=None, help="only this release, e.g. 2.9.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def matrix_command(release: str | None, as_json: bool) -> None:
    """Every release x CUDA variant: architectures, cuDNN, NCCL, minimum driver, GPUs."""
    rows = matrix(release)
    if as_json:
        emit_json(rows)
        return
    table = Table(show_header=True, header_style="bold")
    for column in ("torch", "variant", "CUDA", "SASS (+PTX)", "cuDNN", "NCCL", "min driver"):
        table.add_column(column, overflow="fold")
    covered = Table(show_header=True, header_style="bold")
    covered.add_column("torch")
    covered.add_column("variant")
    covered.add_column("GPUs covered")
    for row in rows:
        archs = " ".join(row.sass) + "".join(f" +PTX {cc}" for cc in row.ptx)
        tags = [tag for tag, on in (("PyPI", row.pypi_default), (row.status, True)) if on]
        variant = f"{row.variant} ({', '.join(tags)})" + ("" if row.verified else " *")
        table.add_row(
            row.torch_version,
            variant,
            row.cuda,
            archs,
            row.cudnn or "?",
            row.nccl or "?",
            row.min_driver or "?",
        )
        covered.add_row(row.torch_version, row.variant, Text(", ".join(row.gpus) or "none"))
    out = console()
    out.print(table)
    out.print(Text("* not fully verified against its source; see --json for sources", style="dim"))
    out.print(covered)


@compat.command("gpu")
@click.argument("name")
@click.option("--driver", default=None, help="only builds this driver can run.")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
def gpu_command(name: str, driver: str | None, as_json: bool) -> None:
    """A GPU's compute capability and the torch builds that run on it."""
    kb = load_kb()
    model = kb.gpu(name)
    if model is None:
        message = kb.unknown_gpu_text(name)
        if as_json:
            emit_json({"gpu": None, "builds": [], "message": message})
        else:
            console().print(Text(message, style=_STYLE["unknown"]))
        sys.exit(EXIT_CODES["unknown"])
    builds = builds_for(model.compute_capability, driver=driver)
    if as_json:
        emit_json({"gpu": model, "builds": builds})
        return
    out = console()
    kind = "datacenter" if model.datacenter else "not datacenter"
    out.print(
        Text(
            f"{model.name}: compute capability {model.compute_capability} ({model.architecture}, "
            f"{kind})"
        )
    )
    table = Table(show_header=True, header_style="bold")
    for column in ("torch", "variant", "CUDA", "runs via", "min driver", "this driver"):
        table.add_column(column)
    for build in builds:
        table.add_row(
            build.torch_version,
            build.variant + (" (experimental)" if build.status == "experimental" else ""),
            build.cuda,
            build.how,
            build.min_driver or "?",
            build.driver_status or "-",
        )
    out.print(table)
    if builds:
        out.print(Text(f"install, e.g.: {builds[0].pip_command}", style="dim"))
    else:
        out.print(Text("no known Linux x86_64 torch wheel runs on this GPU", style=_STYLE["fail"]))
