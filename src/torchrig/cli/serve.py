"""`torchrig serve REPO` / `torchrig serve --demo`: the V2 inference server."""

from __future__ import annotations

import dataclasses
import math
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from torchrig.errors import UsageError
from torchrig.settings import ServeSettings, load_settings, settings_options

DEMO_ROWS = "[[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3]]"
DEMO_SPARSE = "[[" + ", ".join(str(i * 37 % 1000) for i in range(26)) + "]]"


def demo_banner(url: str) -> str:
    curl_body = (
        '{"inputs": ['
        f'{{"name": "dense", "datatype": "FP32", "shape": [1, 13], "data": {DEMO_ROWS}}}, '
        f'{{"name": "sparse", "datatype": "INT64", "shape": [1, 26], "data": {DEMO_SPARSE}}}]}}'
    )
    host = url.removeprefix("http://")
    return f"""
torchrig is serving the demo repository at {url}
  models: ranker (13 dense FP32 + 26 sparse INT64 -> click probability), classifier

  curl -s {url}/v2/health/ready -o /dev/null -w '%{{http_code}}\\n'
  curl -s {url}/v2/models/ranker
  curl -s -X POST {url}/v2/models/ranker/infer -d '{curl_body}'

  python - <<'EOF'
  import numpy as np, tritonclient.http as http
  client = http.InferenceServerClient("{host}")
  dense = http.InferInput("dense", [4, 13], "FP32")
  dense.set_data_from_numpy(np.random.rand(4, 13).astype(np.float32))
  sparse = http.InferInput("sparse", [4, 26], "INT64")
  sparse.set_data_from_numpy(np.random.randint(0, 1000, (4, 26)))
  print(client.infer("ranker", [dense, sparse]).as_numpy("probability"))
  EOF

  metrics: {url}/metrics    stop: Ctrl+C
"""


def check_settings(settings: ServeSettings) -> None:
    """Refuse settings the server cannot run with, naming the fix."""
    from torchrig.server.management import CONTROL_MODES

    if settings.log_format not in ("json", "text"):
        raise UsageError(f"--log-format {settings.log_format!r}: use json or text.")
    if not 0 <= settings.port <= 65535:
        raise UsageError(f"--port {settings.port} is not a TCP port (0..65535).")
    if not -1 <= settings.grpc_port <= 65535:
        raise UsageError(
            f"--grpc-port {settings.grpc_port} is not a TCP port (0..65535), nor -1 (gRPC off)."
        )
    for name in (
        "max_body_mb",
        "max_body_buffer_mb",
        "max_header_kb",
        "max_headers",
        "header_timeout_s",
        "body_timeout_s",
        "max_connections",
        "request_timeout_s",
        "max_request_timeout_s",
        "drain_timeout_s",
        "poll_interval_s",
    ):
        value = getattr(settings, name)
        if not 0 < value < math.inf:  # NaN and infinity too: no size or time is either
            raise UsageError(
                f"--{name.replace('_', '-')} must be positive and finite (not {value})."
            )
    if settings.control_mode not in CONTROL_MODES:
        raise UsageError(
            f"--control-mode {settings.control_mode!r}: use {', '.join(CONTROL_MODES)}."
        )
    if settings.workers < 1:
        raise UsageError(f"--workers {settings.workers}: give 1 or more server processes.")
    if not 0.0 <= settings.access_log_sample <= 1.0:  # NaN fails too
        raise UsageError(
            f"--access-log-sample {settings.access_log_sample}: give a share from 0 (no "
            "access log) to 1 (every request), e.g. 0.01."
        )
    if settings.workers > 1 and settings.control_mode == "explicit":
        raise UsageError(
            f"--workers {settings.workers} with --control-mode explicit: a load or unload "
            "would reach one worker only; use --control-mode poll or none, or --workers 1."
        )


@click.command("serve")
@click.argument("repository", required=False)
@click.option(
    "--demo",
    is_flag=True,
    help="Build the demo repository in a temporary directory "
    "and serve it (with REPOSITORY: build it there).",
)
@settings_options("serve")
@click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    help="TOML settings file with a [serve] table [env TORCHRIG_CONFIG].",
)
def serve(repository: str | None, demo: bool, config: Path | None, **options: Any) -> None:
    """Serve a model repository over the Open Inference Protocol (V2 over REST and gRPC).

    Endpoints: /v2/health/{live,ready}, /v2, /v2/models/M[/versions/V][/ready|/infer],
    /v2/repository/index, /v2/repository/models/M/{load,unload} (--control-mode explicit,
    with a token in TORCHRIG_SERVE_MANAGEMENT_TOKEN or --management-token-file), /metrics.
    Logs: JSON lines on stdout (--log-format text for people).
    """
    settings = load_settings(config_file=config, overrides={"serve": options}).serve
    check_settings(settings)
    from torchrig.server.management import read_management_token

    token = read_management_token(settings.management_token_file)
    if repository is None and not demo:
        raise UsageError("give a model repository (a path or an fsspec URL), or --demo.")

    from torchrig.server.logs import configure_logging
    from torchrig.server.runner import build_state, make_server, raise_open_files

    configure_logging(settings.log_format, settings.log_level.upper())  # type: ignore[arg-type]
    raise_open_files(settings)  # before the workers start: they inherit it
    workdir: str | None = None
    if demo:
        from torchrig.demo import build_demo_repository

        if repository is None:
            workdir = tempfile.mkdtemp(prefix="torchrig-demo-")
            repository = str(Path(workdir) / "models")
        if not Path(repository).exists() or not any(Path(repository).iterdir()):
            click.echo(f"building the demo repository in {repository} ...", err=True)
            build_demo_repository(Path(repository))
    if repository is None:  # pragma: no cover - excluded above
        raise UsageError("give a model repository, or --demo.")
    cache = Path(tempfile.mkdtemp(prefix="torchrig-cache-"))
    grpc_holder: socket.socket | None = None
    try:

        def ready(url: str) -> None:
            import logging

            logging.getLogger("torchrig.server").info("serving on %s", url, extra={"url": url})
            if demo:
                click.echo(demo_banner(url), err=True)

        if settings.workers > 1:
            from torchrig.server.workers import serve_workers

            if settings.grpc_port == 0:  # one free port for all workers, not one each
                grpc_holder = _hold_free_port(settings.host)
                settings = dataclasses.replace(settings, grpc_port=grpc_holder.getsockname()[1])
            status = serve_workers(
                repository, settings, cache_dir=cache, management_token=token, on_ready=ready
            )
            if status:
                sys.exit(status)
            return
        state = build_state(repository, settings, cache_dir=cache, management_token=token)
        server = make_server(state, on_ready=ready)
        server.run()
        if not server.started:
            sys.exit(2)
    finally:
        if grpc_holder is not None:
            grpc_holder.close()
        shutil.rmtree(cache, ignore_errors=True)
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


def _hold_free_port(host: str) -> socket.socket:
    """A socket bound (SO_REUSEPORT, not listening) to a free port: it keeps the port
    while the workers' gRPC servers bind it too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((host, 0))
    return holder
