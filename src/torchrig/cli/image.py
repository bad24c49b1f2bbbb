"""`torchrig image ...`: the standard PyTorch-CUDA images (runtime, dev, serve).

Every command validates the image against the compat knowledge base first; refusals
and bad input are a one-line `Error: ...` with exit code 2 (3: index unreachable).
"""

from __future__ import annotations

import dataclasses
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
from torchrig.image.engine import ENGINES
from torchrig.image.spec import BASE_KINDS, FLAVOURS, PYTHON_SOURCES, ImageSpec, resolve_spec

F = TypeVar("F", bound=Callable[..., Any])


def _spec_options(func: F) -> F:
    """The options that name one image, shared by lock, render and tag."""
    options = [
        click.option("--torch", "torch_version", required=True,
                     help="torch release or version: 2.9 (newest patch) or 2.9.1."),
        click.option("--cuda", default=None,
                     help="CUDA X.Y of the wheel variant, e.g. 12.8 (default: PyPI's), or "
                     "cpu for torch's CPU build."),
        click.option("--flavour", type=click.Choice(FLAVOURS), default="runtime",
                     show_default=True, help="runtime, dev (JupyterLab + sshd) or serve."),
        click.option("--python", default=None,
                     help="Python X.Y (default 3.12 from Ubuntu; others via a pinned uv)."),
        click.option("--python-source", type=click.Choice(PYTHON_SOURCES), default="auto",
                     show_default=True,
                     help="distro: the base's own python3.X packages (Debian 12: 3.11); uv: "
                     "a standalone CPython; auto: distro for Ubuntu's 3.12, else uv."),
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
        python_source=kwargs["python_source"],
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
              help="constraints file from `torchrig image lock` (required: render is "
              "offline).")  # fmt: skip
@click.option("--wheelhouse", "wheelhouses", multiple=True,
              type=click.Path(path_type=Path, file_okay=False),
              help="directory of wheels to put into the context and install from before any "
              "index (repeatable): air-gapped builds, company-built wheels.")  # fmt: skip
@click.option("--torchrig-spec", default=None,
              help="serve: install torchrig as this requirement from the index (e.g. "
              "'torchrig[s3,gcs]==0.1.0') instead of a wheel of this torchrig.")  # fmt: skip
@click.option("--source", default=None, help="org.opencontainers.image.source URL.")
@click.option("-o", "--output", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="directory for the build context.")  # fmt: skip
def render_command(
    *,
    with_compiler: bool,
    base: str | None,
    base_kind: str,
    constraints: Path | None,
    wheelhouses: tuple[Path, ...],
    torchrig_spec: str | None,
    source: str | None,
    output: Path,
    **kw: Any,
) -> None:
    """Write a build context (Dockerfile + the files it copies) for one validated image.

    Offline: the Python pins come from a constraints file made by `torchrig image lock`.
    """
    from torchrig.image.render import DEFAULT_SOURCE, render_context, wheelhouse_files

    spec = _spec(kw, with_compiler=with_compiler, base=base, base_kind=base_kind)
    if constraints is None:
        raise UsageError(
            "render is offline and needs the image's pins: run `torchrig image lock "
            f"--torch {spec.torch_version} --cuda {spec.cuda} --flavour {spec.flavour} "
            f"--python {spec.python} -o constraints.txt` first, then pass --constraints "
            "constraints.txt"
        )
    try:
        text, name = constraints.read_text(encoding="utf-8"), str(constraints)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read --constraints {constraints}: {exc}") from None
    context = render_context(
        spec,
        text,
        source=source or DEFAULT_SOURCE,
        constraints_name=name,
        torchrig_spec=torchrig_spec,
        wheels=wheelhouse_files(wheelhouses),
    )
    written = context.write(output)
    note = "" if spec.base_verified else " (its tag is not verified against the registry)"
    click.echo(f"rendered {spec.flavour} image torch {spec.torch_label} on {spec.base_image}"
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
@click.option("--push", is_flag=True, help="push after building (instead of only loading).")
@click.option("--platform", default="linux/amd64", show_default=True)
@click.option("--secret", "secrets", multiple=True,
              help="build secret, e.g. id=netrc,src=$HOME/.netrc (repeatable).")  # fmt: skip
@click.option("--build-arg", "build_args", multiple=True,
              help="KEY=VALUE, e.g. PIP_INDEX_URL=https://mirror/simple (repeatable).")  # fmt: skip
@click.option("--engine", type=click.Choice(["auto", *ENGINES]), default="auto",
              show_default=True,
              help="auto: docker buildx if an engine answers, else buildah, else "
              "podman.")  # fmt: skip
@click.option("--host-config/--no-host-config", default=True, show_default=True,
              help="pass this machine's PIP_INDEX_URL, PIP_EXTRA_INDEX_URL and proxy variables "
              "as build arguments and its PIP_CERT CA bundle as the secret pip_cert.")  # fmt: skip
def build_command(
    *,
    context: Path,
    tags: tuple[str, ...],
    push: bool,
    platform: str,
    secrets: tuple[str, ...],
    build_args: tuple[str, ...],
    engine: str,
    host_config: bool,
) -> None:
    """Build a rendered context with docker buildx, buildah or podman."""
    from torchrig.image.build import build

    sys.exit(build(context, tags, push=push, platform=platform, secrets=secrets,
                   build_args=build_args, engine=engine, host_config=host_config))  # fmt: skip


@image.command("test")
@click.argument("image_ref", metavar="IMAGE")
@click.option("--engine", type=click.Choice(["auto", "docker", "podman"]), default="auto",
              show_default=True, help="the engine that runs the image.")  # fmt: skip
@click.option("--model-repo", type=click.Path(path_type=Path, file_okay=False, exists=True),
              default=None,
              help="serve: a model repository to mount at /models (default: the demo models, "
              "packed inside the image).")  # fmt: skip
@click.option("--ready-timeout-s", type=click.FloatRange(min=1), default=180.0, show_default=True,
              help="how long a started container may take to answer its probes.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="print the checks as JSON.")
def test_command(
    image_ref: str, engine: str, model_repo: Path | None, ready_timeout_s: float, as_json: bool
) -> None:
    """Start a built image and check what it promises (exit 1 if a check fails)."""
    import shutil
    import tempfile

    from torchrig.image.container import engineer
    from torchrig.image.engine import find_engine
    from torchrig.image.verify import make_demo_repository, plan_for, run_checks

    found = find_engine(engine, purpose="run")
    with engineer(found) as runner, tempfile.TemporaryDirectory(prefix="torchrig-test-") as tmp:
        gpu_on_host = shutil.which("nvidia-smi") is not None
        plan = plan_for(runner, image_ref, model_repo, gpu_on_host=gpu_on_host,
                        ready_timeout_s=ready_timeout_s)  # fmt: skip
        if plan.flavour == "serve" and model_repo is None:
            demo = make_demo_repository(runner, image_ref, Path(tmp) / "models")
            plan = dataclasses.replace(plan, model_repo=demo)
        results = run_checks(runner, plan)
    failed = [r for r in results if r.status == "fail"]
    if as_json:
        checks = [dataclasses.asdict(r) for r in results]
        emit_json({"image": image_ref, "engine": found.name, "flavour": plan.flavour,
                   "checks": checks, "ok": not failed})  # fmt: skip
    else:
        table = Table(show_header=True, header_style="bold", title=f"{image_ref} ({plan.flavour})")
        for column in ("check", "result", "detail"):
            table.add_column(column, overflow="fold")
        styles = {"pass": "green", "fail": "bold red", "skip": "yellow"}
        for row in results:
            table.add_row(row.check, Text(row.status, style=styles[row.status]), Text(row.detail))
        out = console()
        out.print(table)
        out.print(Text(f"{len(results) - len(failed)} of {len(results)} checks passed or "
                       f"skipped; {len(failed)} failed", style="dim"))  # fmt: skip
    sys.exit(1 if failed else 0)


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
