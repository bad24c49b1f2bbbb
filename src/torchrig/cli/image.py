"""`torchrig image ...`: the standard PyTorch-CUDA images (runtime, dev, serve).

Every command validates the image against the compat knowledge base first; refusals
and bad input are a one-line `Error: ...` with exit code 2 (3: index unreachable).
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.table import Table
from rich.text import Text

from torchrig.cli.output import console, emit_json
from torchrig.errors import UsageError
from torchrig.image.spec import BASE_KINDS, FLAVOURS, ImageSpec, resolve_spec

F = TypeVar("F", bound=Callable[..., Any])


def _spec_options(func: F) -> F:
    """The options that name one image, shared by lock, render and tag."""
    options = [
        click.option("--torch", "torch_version", required=True,
                     help="torch release or version: 2.9 (newest patch) or 2.9.1."),
        click.option("--cuda", default=None,
                     help="CUDA X.Y of the wheel variant, e.g. 12.8 (default: PyPI's)."),
        click.option("--flavour", type=click.Choice(FLAVOURS), default="runtime",
                     show_default=True, help="runtime, dev (JupyterLab + sshd) or serve."),
        click.option("--python", default=None,
                     help="Python X.Y (default 3.12 from Ubuntu; others via a pinned uv)."),
        click.option("--driver-floor", default=None,
                     help="oldest NVIDIA driver on the nodes (570 or 570.86.15); it must "
                     "support the CUDA fully, not only under minor-version compatibility."),
        click.option("--allow-experimental", is_flag=True,
                     help="allow a CUDA variant PyTorch marks experimental."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def _spec(kwargs: dict[str, Any], **extra: Any) -> ImageSpec:
    return resolve_spec(
        torch=kwargs["torch_version"],
        cuda=kwargs["cuda"],
        flavour=kwargs["flavour"],
        python=kwargs["python"],
        driver_floor=kwargs["driver_floor"],
        allow_experimental=kwargs["allow_experimental"],
        **extra,
    )


@click.group()
def image() -> None:
    """Render, lock, tag and build the standard images (runtime, dev, serve)."""


@image.command("lock")
@_spec_options
@click.option("--index-url", default=None, help="resolve against this index only.")
@click.option(
    "--resolver",
    type=click.Choice(["auto", "uv", "pip"]),
    default="auto",
    show_default=True,
    help="uv pip compile, or pip --dry-run (same Python only).",
)
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="write the constraints here (default: stdout).")  # fmt: skip
def lock_command(index_url: str | None, resolver: str, output: Path | None, **kw: Any) -> None:
    """Resolve the image's Python requirement set into a constraints file (name==version)."""
    from torchrig.image.lock import resolve

    text = resolve(_spec(kw), index_url=index_url, resolver=resolver)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output} ({sum(1 for ln in text.splitlines() if '==' in ln)} pins)")


@image.command("render")
@_spec_options
@click.option("--with-compiler", is_flag=True, help="add g++ so torch.compile works (runtime).")
@click.option("--base", default=None, help="base image instead of nvidia/cuda:<X.Y.Z>-...")
@click.option("--base-kind", type=click.Choice(BASE_KINDS), default="base", show_default=True,
              help="which nvidia/cuda image: the wheel ships its own CUDA libraries.")  # fmt: skip
@click.option("--constraints", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="constraints file from `torchrig image lock` (default: lock now).")  # fmt: skip
@click.option("--source", default=None, help="org.opencontainers.image.source URL.")
@click.option("-o", "--output", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="directory for the build context.")  # fmt: skip
def render_command(
    *,
    with_compiler: bool,
    base: str | None,
    base_kind: str,
    constraints: Path | None,
    source: str | None,
    output: Path,
    **kw: Any,
) -> None:
    """Write a build context (Dockerfile + the files it copies) for one validated image."""
    from torchrig.image.lock import resolve
    from torchrig.image.render import DEFAULT_SOURCE, render_context

    spec = _spec(kw, with_compiler=with_compiler, base=base, base_kind=base_kind)
    if constraints is None:
        text, name = resolve(spec), "the resolved constraints"
    else:
        try:
            text, name = constraints.read_text(encoding="utf-8"), str(constraints)
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read --constraints {constraints}: {exc}") from None
    context = render_context(spec, text, source=source or DEFAULT_SOURCE, constraints_name=name)
    written = context.write(output)
    note = "" if spec.base_verified else " (its tag is not verified against the registry)"
    click.echo(f"rendered {spec.flavour} image torch {spec.torch_pin[7:]} on {spec.base_image}"
               f"{note} into {output}: {', '.join(p.name for p in written)}")  # fmt: skip


@image.command("tag")
@_spec_options
@click.option("--registry", default=None, help="e.g. registry.example.com/platform.")
@click.option("--suffix", default=None, help="appended as -SUFFIX (a date or a patch label).")
@click.option("--date", "dated", is_flag=True, help="append today's UTC date (YYYYMMDD).")
def tag_command(registry: str | None, suffix: str | None, dated: bool, **kw: Any) -> None:
    """Print the image's tag: <registry>/pytorch:<torch>-cuda<X.Y>-<flavour>[-<suffix>]."""
    from torchrig.image.tags import tag_for

    if dated:
        if suffix:
            raise UsageError("give --suffix or --date, not both")
        suffix = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")
    click.echo(tag_for(_spec(kw), registry, suffix))


@image.command("matrix")
@click.option("--torch", "release", default=None, help="only this release, e.g. 2.9.")
@click.option("--driver-floor", default=None, help="only images this driver fully runs.")
@click.option("--stable", is_flag=True, help="leave out experimental CUDA variants.")
@click.option("--flavour", "flavours", multiple=True, type=click.Choice(FLAVOURS),
              help="only these flavours (repeatable).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="print the rows as JSON.")
def matrix_command(
    release: str | None,
    driver_floor: str | None,
    stable: bool,
    flavours: tuple[str, ...],
    as_json: bool,
) -> None:
    """Every valid (torch, CUDA, flavour) image with its driver floor and the GPUs it covers."""
    from torchrig.image.matrix import image_matrix

    rows = image_matrix(
        release=release,
        driver_floor=driver_floor,
        stable_only=stable,
        flavours=tuple(flavours) or FLAVOURS,  # type: ignore[arg-type]  # click.Choice checked
    )
    if as_json:
        emit_json(rows)
        return
    table = Table(show_header=True, header_style="bold")
    for column in ("torch", "CUDA", "flavour", "status", "min driver", "GPUs covered"):
        table.add_column(column, overflow="fold")
    for row in rows:
        status = row.status + (f" ({row.needs_flag})" if row.needs_flag else "")
        table.add_row(row.torch, row.cuda, row.flavour, status, row.min_driver,
                      Text(", ".join(row.gpus) or "none"))  # fmt: skip
    out = console()
    out.print(table)
    out.print(Text(f"{len(rows)} images", style="dim"))


@image.command("build")
@click.argument("context", type=click.Path(path_type=Path, file_okay=False))
@click.option("--tag", "tags", multiple=True, help="image tag (repeatable).")
@click.option("--push", is_flag=True, help="push instead of loading into the local engine.")
@click.option("--platform", default="linux/amd64", show_default=True)
@click.option("--secret", "secrets", multiple=True,
              help="BuildKit secret, e.g. id=netrc,src=$HOME/.netrc (repeatable).")  # fmt: skip
def build_command(
    context: Path, tags: tuple[str, ...], push: bool, platform: str, secrets: tuple[str, ...]
) -> None:
    """Run `docker buildx build` on a rendered context."""
    from torchrig.image.build import build

    sys.exit(build(context, tags, push=push, platform=platform, secrets=secrets))


@image.command("workflow")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="write here (e.g. .github/workflows/images.yml); default stdout.")  # fmt: skip
def workflow_command(output: Path | None) -> None:
    """Print the CI workflow (GitHub Actions) that builds, pushes and GPU-tests the images."""
    from torchrig.image.render import template

    text = template("github-workflow.yml")
    if output is None:
        sys.stdout.write(text)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}")
