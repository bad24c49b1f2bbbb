"""`torchrig bench URL --model M`: load-test a V2 server; `--in-process REPO/MODEL`: the
model's own ceiling per batch size, and the server's share of it when both are given."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import click
from rich.table import Table

from torchrig.cli.output import console, emit_json
from torchrig.errors import UsageError

SCHEMA_VERSION = 1
EXIT_ALL_FAILED = 1
PROGRESS_MIN_S = 3.0  # runs shorter than this get no progress bar


def _numbers(option: str, value: str, kind: Callable[[str], Any]) -> list[Any]:
    try:
        numbers = [kind(part) for part in value.split(",") if part.strip()]
    except ValueError:
        numbers = []
    if not numbers or any(not 0 < n < math.inf for n in numbers):  # NaN and inf too
        raise UsageError(f"{option} {value!r}: give positive, finite numbers, e.g. {option} 1,8,64")
    return numbers


def _check_positive(**values: float | None) -> None:
    for name, value in values.items():
        # NaN and infinity too: an endless warm-up or level, or a rate never met
        if value is not None and not 0 < value < math.inf:
            raise UsageError(
                f"--{name.replace('_', '-')} must be positive and finite, not {value:g}"
            )


def _check_combinations(
    *,
    url: str | None,
    model: str | None,
    concurrency: str | None,
    rate: str | None,
    in_process: str | None,
    batch_sizes: str | None,
    device: str | None,
    shape_from_metadata: bool,
    shapes: tuple[str, ...],
) -> None:
    """Options that need or exclude each other, checked before anything runs."""
    if url is None and in_process is None:
        raise UsageError("give the server's URL and --model, or --in-process REPO/MODEL")
    if url is not None and not model:
        raise UsageError(f"--model is required with a URL: torchrig bench {url} --model NAME")
    if url is None and (model or concurrency or rate):
        raise UsageError("--model, --concurrency and --rate need the server's URL")
    if in_process is None and (batch_sizes or device):
        raise UsageError("--batch-sizes and --device go with --in-process REPO/MODEL")
    if concurrency and rate:
        raise UsageError(
            "--concurrency (closed loop) and --rate (open loop) exclude each other; give one"
        )
    if shape_from_metadata and shapes:
        raise UsageError("--shape-from-metadata and --shape exclude each other; give one")


def _levels(concurrency: str | None, rate: str | None, arrival: str) -> list[Any]:
    from torchrig.bench.results import Level

    if rate:
        rates = _numbers("--rate", rate, float)
        return [Level(rate=r, arrival=arrival, seed=i) for i, r in enumerate(rates)]
    return [Level(concurrency=n) for n in _numbers("--concurrency", concurrency or "8", int)]


@click.command("bench")
@click.argument("url", required=False)
@click.option("--model", "-m", help="The model to load-test (as the server names it).")
@click.option("--version", "model_version", help="A model version (default: the server's).")
@click.option(
    "--concurrency",
    "-c",
    help="Closed loop: requests in flight, or several levels N1,N2,... (default 8).",
)
@click.option("--rate", "-r", help="Open loop: arrivals per second (or several, R1,R2,...).")
@click.option(
    "--arrival",
    type=click.Choice(["poisson", "constant"]),
    default="poisson",
    show_default=True,
    help="With --rate: Poisson arrivals or evenly spaced ones.",
)
@click.option("--duration", type=float, default=10.0, show_default=True, help="Seconds measured.")
@click.option("--warmup", type=float, default=2.0, show_default=True, help="Seconds before.")
@click.option("--batch", type=int, help="Rows per request: the size of a -1 batch dim (1).")
@click.option(
    "--binary/--json-data",
    "binary",
    default=None,
    help="Tensor data as Triton's binary extension or as JSON "
    "(default: binary when the server lists binary_tensor_data).",
)
@click.option(
    "--shape-from-metadata",
    is_flag=True,
    help="Take every shape from the model's metadata (the default; excludes --shape).",
)
@click.option(
    "--shape",
    "shapes",
    multiple=True,
    metavar="NAME=d1,d2",
    help="Sizes of an input's open (-1) dims after the batch dim; repeat per input.",
)
@click.option("--processes", "-p", type=int, default=1, show_default=True, help="Load processes.")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Per request, s.")
@click.option(
    "--max-connections",
    type=int,
    default=1024,
    show_default=True,
    help="With --rate: connections at most (per process).",
)
@click.option("--in-process", "in_process", metavar="REPO/MODEL", help="Time the model itself.")
@click.option("--batch-sizes", help="With --in-process: batch sizes (default: the warm-up sizes).")
@click.option("--device", help="With --in-process: cpu, cuda, cuda:N (default: its config).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of tables.")
def bench(
    *,
    url: str | None,
    model: str | None,
    model_version: str | None,
    concurrency: str | None,
    rate: str | None,
    arrival: str,
    duration: float,
    warmup: float,
    batch: int | None,
    binary: bool | None,
    shape_from_metadata: bool,
    shapes: tuple[str, ...],
    processes: int,
    timeout: float,
    max_connections: int,
    in_process: str | None,
    batch_sizes: str | None,
    device: str | None,
    as_json: bool,
) -> None:
    """Load-test a V2 server's model with random data built from its metadata, and/or
    measure a packed model's in-process ceiling.

    Exit 0: every level had successful requests; 1: a level where every request failed;
    2: bad input (unreachable URL, unknown model, shapes, conflicting options).
    """
    from torchrig.bench.payload import parse_shape_option

    _check_combinations(
        url=url,
        model=model,
        concurrency=concurrency,
        rate=rate,
        in_process=in_process,
        batch_sizes=batch_sizes,
        device=device,
        shape_from_metadata=shape_from_metadata,
        shapes=shapes,
    )
    _check_positive(duration=duration, batch=batch, processes=processes, timeout=timeout)
    _check_positive(max_connections=max_connections)
    if not 0 <= warmup < math.inf:
        raise UsageError(f"--warmup must be >= 0 and finite, not {warmup:g}")
    sizes = _numbers("--batch-sizes", batch_sizes, int) if batch_sizes else None
    levels = _levels(concurrency, rate, arrival)
    overrides = parse_shape_option(shapes)

    document: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "kind": "bench"}
    ceiling = None
    if in_process is not None:
        from torchrig.bench.inprocess import measure_ceiling

        ceiling = measure_ceiling(
            in_process, batch_sizes=sizes, device=device, include_max_batch=url is not None
        )
        document["in_process"] = ceiling
    results = []
    if url is not None and model:
        results = _load_test(
            document,
            url,
            model,
            model_version,
            levels,
            batch=batch,
            binary=binary,
            overrides=overrides,
            processes=processes,
            duration=duration,
            warmup=warmup,
            timeout=timeout,
            max_connections=max_connections,
            as_json=as_json,
        )
    share = None
    if ceiling is not None and results:
        from torchrig.bench.inprocess import server_share

        share = server_share(max(r.rows_per_s for r in results), ceiling)
    if url is not None:
        document["server_share"] = share
    if as_json:
        emit_json(document)
    else:
        _render(document, ceiling, share)
    failed = [r for r in results if r.ok == 0]
    for result in failed:
        level = f"rate {result.rate:g}/s" if result.rate else f"concurrency {result.concurrency}"
        if result.error_samples:
            key, text = next(iter(result.error_samples.items()))
            why = f"{key}: {text}"
        else:
            why = "no response completed inside the window; lengthen --duration or --timeout"
        click.echo(f"Error: every request failed at {level} ({why})", err=True)
    if failed:
        sys.exit(EXIT_ALL_FAILED)


def _load_test(
    document: dict[str, Any],
    url: str,
    model: str,
    version: str | None,
    levels: list[Any],
    *,
    batch: int | None,
    binary: bool | None,
    overrides: dict[str, list[int]],
    processes: int,
    duration: float,
    warmup: float,
    timeout: float,
    max_connections: int,
    as_json: bool,
) -> list[Any]:
    from torchrig.bench.loadgen import LoadPlan
    from torchrig.bench.parallel import run_levels
    from torchrig.bench.target import prepare

    target = prepare(
        url, model, version=version, batch=batch, shapes=overrides, binary=binary, timeout_s=timeout
    )
    plan = LoadPlan(
        endpoint=target.endpoint,
        requests=target.requests,
        warmup_s=warmup,
        duration_s=duration,
        timeout_s=timeout,
        max_connections=max_connections,
    )
    document.update(
        url=target.endpoint.url,
        model=model,
        version=version,
        server={"name": target.server_name, "version": target.server_version},
        protocol="binary" if target.binary else "json",
        inputs=[
            {"name": s.name, "datatype": s.datatype, "shape": s.shape} for s in target.shapes.inputs
        ],
        rows_per_request=target.shapes.rows,
        mode="open" if levels[0].rate is not None else "closed",
        processes=processes,
        duration_s=duration,
        warmup_s=warmup,
    )
    if not as_json:
        console().print(_headline(document), markup=False)
    show = not as_json and sys.stdout.isatty() and warmup + duration >= PROGRESS_MIN_S
    with _progress(show, warmup + duration) as on_level:
        results = run_levels(
            plan,
            levels,
            rows_per_request=target.shapes.rows,
            processes=processes,
            on_level=on_level,
        )
    document["levels"] = results
    return results


def _headline(document: dict[str, Any]) -> str:
    inputs = ", ".join(f"{i['name']} {i['datatype']}{list(i['shape'])}" for i in document["inputs"])
    server = document["server"]
    processes = document["processes"]
    return (
        f"{document['model']} at {document['url']} ({server['name']} {server['version']})\n"
        f"{document['protocol']} requests: {inputs}\n"
        f"{document['warmup_s']:g} s warm-up + {document['duration_s']:g} s per level, "
        f"{processes} process{'es' if processes > 1 else ''}"
    )


class _progress:
    """A rich progress bar per level (on stderr) when `show`, else nothing."""

    def __init__(self, show: bool, seconds: float) -> None:
        self.show = show
        self.seconds = seconds
        self.bar: Any = None

    def __enter__(self) -> Callable[[Any], Callable[[int], None] | None] | None:
        if not self.show:
            return None
        import time

        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[done]} requests"),
            console=Console(stderr=True),
            transient=True,
            refresh_per_second=4,
        )
        self.bar.start()

        def on_level(level: Any) -> Callable[[int], None]:
            name = f"rate {level.rate:g}/s" if level.rate else f"concurrency {level.concurrency}"
            task = self.bar.add_task(name, total=self.seconds, done=0)
            began = time.monotonic()

            def update(done: int) -> None:
                self.bar.update(task, completed=time.monotonic() - began, done=done)

            return update

        return on_level

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _render(document: dict[str, Any], ceiling: Any, share: Any) -> None:
    from torchrig.bench.inprocess import RUNS

    out = console()
    results = document.get("levels", [])
    if results:
        open_loop = results[0].rate is not None
        out.print("load (latency of successful requests in ms):")
        table = Table()
        columns = ["rate/s" if open_loop else "concurrency", "requests/s", "rows/s"]
        columns += ["p50", "p90", "p99", "ok", "errors"]
        columns += ["late", "dropped"] if open_loop else []
        for column in columns:
            table.add_column(column, justify="left" if column == "errors" else "right")
        for r in results:
            errors = ", ".join(f"{k}: {v}" for k, v in r.errors_by_status.items()) or "0"
            row = [f"{r.rate:g}" if open_loop else str(r.concurrency)]
            row += [f"{r.requests_per_s:,.1f}", f"{r.rows_per_s:,.1f}"]
            row += [f"{r.latency_ms.p50:.2f}", f"{r.latency_ms.p90:.2f}", f"{r.latency_ms.p99:.2f}"]
            row += [str(r.ok), errors]
            row += [str(r.late), str(r.dropped)] if open_loop else []
            table.add_row(*row)
        out.print(table)
        samples: dict[str, str] = {}
        for r in results:
            for key, text in r.error_samples.items():
                samples.setdefault(key, text)
        for key, text in samples.items():
            out.print(f"  {key}: {text}", markup=False)
    if ceiling is not None:
        out.print(
            f"in-process ceiling of {ceiling.model}/{ceiling.version} on {ceiling.device} "
            f"(median of {RUNS} runs per batch size):"
        )
        table = Table()
        for column in ("batch size", "rows/s", "ms/batch"):
            table.add_column(column, justify="right")
        for b in ceiling.batches:
            table.add_row(str(b.batch_size), f"{b.rows_per_s:,.1f}", f"{b.batch_ms:.3f}")
        out.print(table)
    if share is not None:
        out.print(
            f"server share of the in-process ceiling at batch {share.batch_size}: "
            f"{share.ratio:.1%} ({share.server_rows_per_s:,.1f} of "
            f"{share.in_process_rows_per_s:,.1f} rows/s)"
        )
